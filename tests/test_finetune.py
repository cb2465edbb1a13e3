"""Fine-tuning through the shared trainer: classification head on SST-2, SFT, PEFT state handling."""

from __future__ import annotations

import json
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpt_jax import run_config
from gpt_jax.model import GPT
from gpt_jax.optim import tree_bytes
from gpt_jax.trainer import Trainer, train_and_evaluate

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def byte_base(tmp_path_factory, tfds_cache):
    """A tiny byte-level base (any text encodes), pretrained 10 steps on tiny Shakespeare."""
    c = run_config.load_config(str(REPO / "configs" / "tiny.py"))
    c.data.tfds_dir = str(tfds_cache)
    c.data.tokenizer = "byte"
    c.model.block_size = 64  # room for a few short SFT examples per row
    c.train.num_steps = 10
    c.train.eval_every = 10
    c.train.eval_batches = 1
    c.checkpoint.every = 10
    c.sample.num_tokens = 0
    workdir = tmp_path_factory.mktemp("byte_base")
    train_and_evaluate(c, workdir)
    return workdir


def finetune_config(tfds_cache, base, method, **train):
    c = run_config.load_config(str(REPO / "configs" / "finetune" / "sst2.py"))
    c.data.tfds_dir = str(tfds_cache)
    c.init_from = str(base)
    c.peft.method = method
    c.peft.rank = 4
    c.task.max_len = 32
    c.train.batch_size = 8
    c.train.num_steps = train.get("num_steps", 10)
    c.train.steps_per_call = 5
    c.train.log_every = 5
    c.train.eval_every = 5
    c.checkpoint.every = 10
    c.model.dropout = 0.0
    c.optim.warmup_steps = 2
    c.optim.lr = 1e-2
    return c


def leaves_equal_bitwise(a, b) -> bool:
    return all(
        np.array_equal(np.asarray(x).view(np.uint8), np.asarray(y).view(np.uint8))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


@pytest.mark.parametrize("method", ["lora", "adapters", "frozen"])
def test_frozen_base_is_bit_identical_and_has_no_optimizer_state(byte_base, tfds_cache, tmp_path, method):
    tr = Trainer(finetune_config(tfds_cache, byte_base, method), tmp_path, write=False)
    assert (tr.task.seq_len, tr.task.lm_head) == (tr.task.max_len, False)  # what tokens/s and MFU count
    state = tr.init_state()
    frozen_before = jax.device_get(state.frozen)
    params_before = jax.device_get(state.params)
    for step in (0, 5):
        state, _ = tr.run_steps(state, step, 5)
    assert leaves_equal_bitwise(frozen_before, jax.device_get(state.frozen))
    assert not leaves_equal_bitwise(params_before, jax.device_get(state.params))  # the adapter did train
    # AdamW keeps two slots per trainable value and nothing for the frozen base.
    assert tree_bytes(state.opt_state) < 2 * tree_bytes(state.params) + 1024
    assert tree_bytes(state.frozen) > tree_bytes(state.params)


def test_lora_starts_exactly_at_the_base(byte_base, tfds_cache, tmp_path):
    from gpt_jax.workdir import load_run

    tr = Trainer(finetune_config(tfds_cache, byte_base, "lora"), tmp_path, write=False)
    state = jax.device_get(tr.init_state())
    _, base_cfg, base_params, _ = load_run(byte_base)
    ids = jnp.asarray(np.arange(16, dtype=np.int32)[None] % 200)
    got = GPT(tr.model_cfg).apply({"params": tr.task.backbone.gpt_params(state.params["backbone"], state.frozen)}, ids)
    want = GPT(base_cfg).apply({"params": base_params}, ids)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_classify_end_to_end_report_best_checkpoint_and_adapter(byte_base, tfds_cache, tmp_path):
    from gpt_jax.finetune import apply_adapter

    c = finetune_config(tfds_cache, byte_base, "lora", num_steps=20)
    c.task.patience = 1  # stop after one eval without a better val_accuracy
    summary = train_and_evaluate(c, tmp_path / "ft")
    ft = tmp_path / "ft"
    assert summary["status"] in ("completed", "early_stopped")
    assert 0.0 <= summary["validation_accuracy"] <= 1.0 and 0.0 <= summary["test_accuracy"] <= 1.0
    assert summary["best_metric"] == "val_accuracy" and (ft / "best").is_dir()
    assert summary["report_from_step"] == summary["best_step"]
    report = json.loads((ft / "report.json").read_text())
    assert report["reports"]["validation"]["n"] == 872 and report["reports"]["test"]["n"] == 1821
    assert json.loads((ft / "label_map.json").read_text()) == {"0": "negative", "1": "positive"}
    assert "confusion matrix" in (ft / "report.txt").read_text()
    assert 0 < summary["trainable_pct"] < 100

    # The adapter file alone, put on a copy of the base in another workdir, gives the fine-tuned model.
    other_base = tmp_path / "base_copy"
    shutil.copytree(byte_base, other_base)
    cfg, gpt_params, _, head = apply_adapter(ft / "adapter.safetensors", other_base)
    tr = Trainer(c, ft, write=False)
    from gpt_jax.checkpoint import Checkpointer, restore_target

    with Checkpointer(ft / "best", save_every=0, read_only=True) as ckpt:
        best, _ = ckpt.restore(restore_target(tr.abstract, tr.shardings))
    best = jax.device_get(best)
    ids = jnp.asarray(np.arange(24, dtype=np.int32)[None] % 200)
    want = GPT(cfg).apply({"params": tr.task.backbone.gpt_params(best.params["backbone"], best.frozen)}, ids)
    got = GPT(cfg).apply({"params": gpt_params}, ids)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-6)
    np.testing.assert_array_equal(head["kernel"], best.params["head"]["kernel"])

    # Sampling/chat/evaluation load a fine-tuned workdir as plain GPT params (LoRA merged in).
    from gpt_jax.workdir import load_run

    _, loaded_cfg, loaded, tokenizer = load_run(ft)
    assert loaded_cfg == cfg and tokenizer.vocab_size == tr.tokenizer.vocab_size
    assert GPT(loaded_cfg).apply({"params": loaded}, ids).shape == want.shape


def test_finetune_resumes_from_its_own_checkpoint(byte_base, tfds_cache, tmp_path):
    c = finetune_config(tfds_cache, byte_base, "full", num_steps=10)
    c.task.early_stop_metric = None
    first = train_and_evaluate(c, tmp_path)
    c.train.num_steps = 15  # continue the same workdir: restores step 10, ignores init_from's weights
    second = train_and_evaluate(c, tmp_path)
    assert first["step"] == 10 and second["step"] == 15
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == 15


def test_sft_packed_training_runs_and_masks_prompts(byte_base, tfds_cache, tmp_path):
    rows = [{"instruction": f"{i}+{i}", "input": "", "output": str(2 * i)} for i in range(40)]
    data = tmp_path / "tiny_sft.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    c = run_config.load_config(str(REPO / "configs" / "finetune" / "alpaca_sft.py"))
    c.data.tfds_dir = str(tfds_cache)
    c.task.dataset = str(data)
    c.task.template = "plain"  # short: several examples fit the tiny base's 64-token rows
    c.init_from = str(byte_base)
    c.model.dropout = 0.0
    c.train.batch_size = 8
    c.train.num_steps = 4
    c.train.steps_per_call = 2
    c.train.log_every = 2
    c.train.eval_every = 4
    c.checkpoint.every = 4
    tr = Trainer(c, tmp_path / "run", write=False)
    batch = tr.task.train_batches(0, 1, 0, 1)
    assert set(batch) >= {"inputs", "targets", "weights", "segment_ids", "positions"}
    assert batch["segment_ids"].max() > 1  # several examples share a row
    w = batch["weights"][0]
    assert 0 < w.sum() < (batch["segment_ids"][0] > 0).sum()  # prompts are not trained on
    summary = train_and_evaluate(c, tmp_path / "run")
    assert np.isfinite(summary["val_loss"]) and summary["method"] == "lora"


def test_bad_finetune_inputs_are_one_line_errors(byte_base, tfds_cache, tmp_path):
    c = finetune_config(tfds_cache, byte_base, "lora")
    c.init_from = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="neither a gpt_jax workdir"):
        Trainer(c, tmp_path / "w", write=False)
    c = finetune_config(tfds_cache, byte_base, "lora")
    c.task.pooling = "max"
    with pytest.raises(ValueError, match="task.pooling"):
        Trainer(c, tmp_path / "w", write=False)
    c = finetune_config(tfds_cache, byte_base, "nope")
    with pytest.raises(ValueError, match="peft.method"):
        Trainer(c, tmp_path / "w", write=False)


@pytest.mark.parametrize("how", ["last", "mean"])
def test_pooling_reads_only_real_tokens(how):
    from gpt_jax.tasks.classify import pool

    x_BxLxD = jax.random.normal(jax.random.PRNGKey(0), (3, 6, 4))
    lengths_B = jnp.array([6, 3, 1])
    pooled_BxD = pool(x_BxLxD, lengths_B, how)
    for b, n in enumerate(np.asarray(lengths_B)):
        real_LxD = np.asarray(x_BxLxD[b, :n])
        want_D = real_LxD[-1] if how == "last" else real_LxD.mean(0)
        np.testing.assert_allclose(pooled_BxD[b], want_D, rtol=1e-6, atol=1e-6)
    # Whatever sits in the pad positions never reaches the pooled vector.
    pad_BxL = jnp.arange(6)[None] >= lengths_B[:, None]
    noisy_BxLxD = jnp.where(pad_BxL[..., None], 1e3, x_BxLxD)
    np.testing.assert_array_equal(pool(noisy_BxLxD, lengths_B, how), pooled_BxD)
