"""load_run restores a workdir without a Trainer: no task, no optimizer rebuilt, no dataset read (issue 15)."""

from __future__ import annotations

import pathlib

import jax
import numpy as np
import pytest

from gpt_jax import run_config
from gpt_jax.cli import finetune as finetune_cli
from gpt_jax.cli import sample as sample_cli
from gpt_jax.data import labelled, sources
from gpt_jax.model import GPT
from gpt_jax.trainer import train_and_evaluate
from gpt_jax.workdir import load_run

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def lora_classifier(tmp_path_factory, tfds_cache):
    """A byte-level base (10 steps) and a LoRA SST-2 classifier fine-tuned from it (5 steps)."""
    base = run_config.load_config(str(REPO / "configs" / "tiny.py"))
    base.data.tfds_dir, base.data.tokenizer = str(tfds_cache), "byte"
    base.train.num_steps = base.train.eval_every = base.checkpoint.every = 10
    base.train.eval_batches, base.sample.num_tokens = 1, 0
    base_dir = tmp_path_factory.mktemp("base")
    train_and_evaluate(base, base_dir)
    small = tmp_path_factory.mktemp("data")  # the first 200 rows of each SST-2 split: enough to train on
    (small / "sst2").mkdir()
    for split in ("train", "dev", "test"):
        lines = (sources.resolve_manual_dir(None) / "sst2" / f"{split}.tsv").read_text().splitlines(keepends=True)
        (small / "sst2" / f"{split}.tsv").write_text("".join(lines[:201]))
    ft_dir = tmp_path_factory.mktemp("lora")
    every = ("num_steps", "eval_every", "steps_per_call", "log_every")
    argv = [  # through the fine-tuning command, as the README runs it
        f"--config={REPO / 'configs' / 'finetune' / 'sst2.py'}",
        f"--init_from={base_dir}",
        f"--workdir={ft_dir}",
        "--config.peft.method=lora",
        "--config.task.max_len=32",
        "--config.train.batch_size=8",
        "--config.checkpoint.every=5",
        *[f"--config.train.{k}=5" for k in every],
        f"--config.data.tfds_dir={tfds_cache}",
        f"--config.data.manual_dir={small}",
    ]
    assert finetune_cli.main(argv) == 0
    return base_dir, ft_dir


def test_sampling_a_finetuned_run_does_not_read_its_dataset(lora_classifier, monkeypatch, capsys):
    _, ft_dir = lora_classifier

    def no_data(*args, **kwargs):
        raise AssertionError("the dataset was read")

    monkeypatch.setattr(labelled, "load_labelled", no_data)
    monkeypatch.setattr(sources, "load_text_splits", no_data)
    monkeypatch.setattr(sources, "prepare_builder", no_data)
    config, cfg, params, tokenizer = load_run(ft_dir)
    assert config.task.name == "classify"
    assert "lora" not in str(jax.tree_util.tree_structure(params))  # merged into plain GPT params
    ids = np.asarray(tokenizer.encode("a fine film"))[None]
    logits = GPT(cfg).apply({"params": params}, ids)
    assert logits.shape == (1, ids.shape[1], cfg.vocab_size) and np.isfinite(np.asarray(logits)).all()
    assert sample_cli.main([f"--workdir={ft_dir}", "--prompt=it is", "--max_new_tokens=4", "--temperature=0"]) == 0
    assert capsys.readouterr().out.startswith("it is")


def test_load_run_names_a_workdir_without_checkpoints(tmp_path, lora_classifier):
    _, ft_dir = lora_classifier
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model_config.json", "tokenizer.json"):
        (bare / name).write_bytes((ft_dir / name).read_bytes())
    with pytest.raises(FileNotFoundError, match=f"no complete checkpoint in {bare / 'checkpoints'}"):
        load_run(bare)
