"""configs/gpt2_124m.py end to end for a few steps: GPT-2-format BPE files, the 124M model's width and
vocabulary (1 layer, 128-token rows here: CPU), the grain pipeline, 8 fake devices with FSDP."""

from __future__ import annotations

import json
import math
import pathlib

import pytest

from gpt_jax import run_config
from gpt_jax.data.tokenizers import build_tokenizer
from gpt_jax.trainer import train_and_evaluate

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory):
    """(corpus file, dir of GPT-2-layout vocab.json + merges.txt) from the staged WikiText-2 test file."""
    from gpt_jax.data import sources

    corpus = sources.require_manual_files("wikitext2", ["wikitext2/wiki.test.raw"]) / "wikitext2/wiki.test.raw"
    files = tmp_path_factory.mktemp("gpt2_files")
    bpe = build_tokenizer("bpe", corpus.read_text(encoding="utf-8")[:200_000], vocab_size=1024)
    bpe.save_pretrained(files)
    for extra in ("tokenizer.json", "tokenizer_config.json"):  # GPT-2's original pair of files only
        (files / extra).unlink(missing_ok=True)
    return corpus, files


def test_gpt2_124m_config_runs_a_few_steps(stand_in, tmp_path, monkeypatch):
    corpus, files = stand_in
    monkeypatch.setenv("GPT_JAX_GPT2_TOKENIZER", str(files))
    c = run_config.load_config(str(REPO / "configs" / "gpt2_124m.py"))
    assert (c.data.pipeline, c.data.tokenizer, c.data.tokenizer_path) == ("grain", "bpe", str(files))
    c.data.dataset = f"file:{corpus}"
    c.data.tfds_dir, c.data.grain_workers = str(tmp_path / "tfds"), 0
    c.model.n_layer, c.model.block_size = 1, 128  # the real width (768) and vocabulary (50304)
    c.train.batch_size, c.train.num_steps, c.train.log_every = 8, 3, 1
    c.train.eval_every, c.train.eval_batches = 0, 1
    c.optim.warmup_steps = 1
    c.checkpoint.every = 0
    c.sample.num_tokens = 0
    summary = train_and_evaluate(c, tmp_path / "run")
    assert (summary["status"], summary["step"], summary["devices"]) == ("completed", 3, 8)
    assert math.isfinite(summary["train_loss"]) and math.isfinite(summary["val_loss"])
    model = json.loads((tmp_path / "run" / "model_config.json").read_text())
    assert (model["n_embd"], model["n_head"], model["vocab_size"]) == (768, 12, 50304)
    saved = json.loads((tmp_path / "run" / "tokenizer.json").read_text())
    assert saved["kind"] == "bpe"
    assert list((tmp_path / "run" / "checkpoints" / "3" / "data").glob("process_0-of-1.json"))
