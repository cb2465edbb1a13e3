"""`python -m gpt_jax.compress quantize|prune` on a classify run (a tiny from-scratch SST-2 stand-in):
the output loads like a classify run and scores like the float run; the class head stays float32 and
dense; pruned backbone weights stay exactly zero through the classification fine-tune."""

import json
import pathlib

import jax
import ml_collections
import numpy as np
import pytest
from test_compress_workdir import tree_digest
from test_finetune import write_keyword_sst2

from gpt_jax import run_config
from gpt_jax.cli import compress
from gpt_jax.compression import classify_run, prune
from gpt_jax.compression.matrices import flat
from gpt_jax.compression.qtensor import QuantizedTensor
from gpt_jax.compression.quantize import dequantize_tree
from gpt_jax.evaluation import evaluate_workdir
from gpt_jax.trainer import Trainer, train_and_evaluate
from gpt_jax.workdir import load_run

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sst2_run(tmp_path_factory):
    """configs/finetune/sst2_scratch.py shrunk (2x64, byte tokenizer) on a keyword-labelled SST-2 stand-in."""
    root = tmp_path_factory.mktemp("classify")
    write_keyword_sst2(root / "data", {"train": 256, "validation": 64, "test": 64})
    c = run_config.load_config(str(REPO / "configs" / "finetune" / "sst2_scratch.py"))
    c.data.manual_dir, c.data.tfds_dir = str(root / "data"), str(root / "tfds")
    c.data.tokenizer, c.data.vocab_size = "byte", None
    c.model.n_layer, c.model.n_head, c.model.n_embd, c.model.block_size = 2, 2, 64, 32
    c.model.dropout = 0.0
    c.task.max_len = 32
    c.train.batch_size = 16
    c.train.num_steps = c.checkpoint.every = 40
    c.train.steps_per_call = c.train.eval_every = c.train.log_every = 20
    c.optim.lr, c.optim.min_lr, c.optim.warmup_steps = 3e-3, 3e-4, 4
    workdir = root / "run"
    train_and_evaluate(c, workdir)
    return workdir, evaluate_workdir(str(workdir))


def quantize(src, out, *args):
    before = tree_digest(src)
    assert compress.main(["quantize", f"--workdir={src}", f"--out={out}", *args]) == 0
    assert tree_digest(src) == before  # the source is read only


def logits(workdir, params):
    config = ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))
    tr = Trainer(config, workdir, write=False)
    batch = jax.tree.map(lambda x: x[0], tr.task.eval_batches(0, 1))
    return np.asarray(tr.task.logits(dequantize_tree(params), {}, batch))


def test_int8_classify_run_loads_and_scores_like_float(sst2_run, tmp_path):
    src, ref = sst2_run
    assert ref["val_accuracy"] > 0.8 and "test_accuracy" in ref  # it learned the keywords; evaluate gives both
    out = tmp_path / "int8"
    quantize(src, out, "--bits=8")
    assert (out / "label_map.json").read_text() == (src / "label_map.json").read_text()
    record = json.loads((out / "quantization.json").read_text())
    assert "h_0/mlp/fc/kernel" in record["matrices"] and "head/kernel" not in str(record["matrices"])
    backbone = load_run(out)[2]  # as for any classify run: the GPT backbone, its int8 weights kept int8
    assert isinstance(backbone["h_0"]["attn"]["out_kernel"], QuantizedTensor)
    got_params, step = classify_run.load_params(out)
    float_params, float_step = classify_run.load_params(src)
    assert step == float_step
    for k in ("kernel", "bias"):  # the class head: float32, bit-identical
        np.testing.assert_array_equal(np.asarray(got_params["head"][k]), np.asarray(float_params["head"][k]))
    want, got = logits(src, float_params), logits(out, got_params)
    # measured: max |got - want| = 2.2e-5 of max |want| (3.38); the weights moved by up to 0.4% of their range
    np.testing.assert_allclose(got, want, atol=1e-3 * np.abs(want).max())
    assert not np.array_equal(got, want)  # the int8 weights are the ones scored
    scored = evaluate_workdir(str(out))
    assert scored["step"] == ref["step"] and abs(scored["val_loss"] - ref["val_loss"]) < 0.01
    assert abs(scored["val_accuracy"] - ref["val_accuracy"]) <= 2 / 64  # at most 2 of the 64 dev rows flip
    assert abs(scored["test_accuracy"] - ref["test_accuracy"]) <= 2 / 64


def test_int4_gptq_classify_calibrates_on_real_tokens_and_scores(sst2_run, tmp_path, monkeypatch):
    src, ref = sst2_run
    seen = {}
    original = compress.collect_hessians

    def spy(cfg, params, windows, batch=16, lengths_N=None):
        seen["lengths"] = lengths_N
        return original(cfg, params, windows, batch, lengths_N)

    monkeypatch.setattr(compress, "collect_hessians", spy)
    out = tmp_path / "int4"
    quantize(src, out, "--bits=4", "--group_size=32", "--method=gptq", "--calibration_windows=32")
    assert seen["lengths"] is not None and len(seen["lengths"]) == 32 and seen["lengths"].max() < 32
    scored = evaluate_workdir(str(out))
    assert abs(scored["val_loss"] - ref["val_loss"]) < 0.1 and scored["val_accuracy"] >= ref["val_accuracy"] - 0.1


def test_two_four_prune_fine_tune_keeps_pruned_weights_zero_and_head_dense(sst2_run, tmp_path):
    src, _ = sst2_run
    before = tree_digest(src)
    out = tmp_path / "p24"
    argv = ["prune", f"--workdir={src}", f"--out={out}", "--pattern=2:4", "--finetune_steps=10"]
    assert compress.main(argv) == 0
    assert tree_digest(src) == before
    source, step0 = classify_run.load_params(src)
    # the weights the fine-tune starts from: magnitude 2:4 of the float backbone
    start = {
        "backbone": prune.apply_masks(source["backbone"], prune.magnitude_masks(source["backbone"], 0.5, pattern="2:4"))
    }
    tuned, step = classify_run.load_params(out)
    assert step == step0 + 10
    start_flat, tuned_flat = flat(jax.device_get(start["backbone"])), flat(jax.device_get(tuned["backbone"]))
    matrices = prune.prunable(start["backbone"])
    assert matrices and all(m.path[-1] != "head" for m in matrices)
    moved = False
    for m in matrices:
        zero_before, w = np.asarray(start_flat[m.path]) == 0, np.asarray(tuned_flat[m.path])
        assert np.all(w[zero_before] == 0), m.key  # exactly zero after the optimizer steps
        assert prune.nm_exact(m.view(w), 2, 4), m.key
        moved |= not np.array_equal(w, np.asarray(start_flat[m.path]))
    assert moved  # the fine-tune did train the kept weights
    assert np.all(np.asarray(tuned["head"]["kernel"]) != 0)  # the class head is not pruned
    record = json.loads((out / "pruning.json").read_text())
    assert record["report"]["prunable_sparsity"] == 0.5 and "val_accuracy" in record["finetune"]
    assert np.isfinite(evaluate_workdir(str(out))["val_accuracy"])


def test_adapter_classify_runs_are_refused_in_one_line():
    config = ml_collections.ConfigDict({"task": {"name": "classify"}, "peft": {"method": "lora"}})
    with pytest.raises(ValueError, match="peft.method=lora classify run; compression takes full fine-tunes"):
        classify_run.check(config, "W")
    classify_run.check(ml_collections.ConfigDict({"peft": {"method": "full"}}), "W")
