"""Acceptance of the model-family seam (issue 15): a family defined outside the package (tests/toy_family.py,
an MLP language model) trains through the unchanged trainer, checkpoints, resumes bit-for-bit, samples,
and loads with load_run, with Muon seeing its matrices through the family."""

import json

import jax
import numpy as np
import pytest
from toy_family import FAMILY, MLPLMConfig

from gpt_jax.checkpoint import Checkpointer, checkpoint_dir
from gpt_jax.metrics import read_metrics
from gpt_jax.models import registry
from gpt_jax.trainer import train_and_evaluate
from gpt_jax.workdir import load_run

registry.register(FAMILY)


def toy_config(tiny_config, steps):
    config = tiny_config()
    config.model.family = "mlp_lm"
    config.train.num_steps, config.checkpoint.every = steps, 10
    config.train.eval_every, config.train.log_every = 10, 10
    config.sample.num_tokens = 12
    config.optim.lr, config.optim.warmup_steps = 3e-2, 0  # a shallow model takes a larger step
    return config


def test_unknown_family_is_a_one_line_error(tiny_config, tmp_path):
    config = tiny_config()
    config.model.family = "transformr"
    with pytest.raises(ValueError, match=r"config.model.family='transformr' is not one of \[.*'gpt'"):
        train_and_evaluate(config, tmp_path / "w")


def test_a_new_family_trains_checkpoints_resumes_and_samples(tiny_config, tmp_path):
    straight = train_and_evaluate(toy_config(tiny_config, 30), tmp_path / "straight")
    assert straight["status"] == "completed"
    losses = [r["train_loss"] for r in read_metrics(tmp_path / "straight") if "train_loss" in r]
    assert losses[-1] < losses[0] - 0.3  # it learns (ln 65 = 4.17 at init)
    saved = json.loads((tmp_path / "straight" / "model_config.json").read_text())
    assert saved["family"] == "mlp_lm" and "n_layer" not in saved

    # interrupted at 20 (the checkpoint), resumed to 30: the same run, bit for bit
    train_and_evaluate(toy_config(tiny_config, 20), tmp_path / "resumed")
    config = toy_config(tiny_config, 30)
    config.train.allow_changes = True  # a longer schedule
    resumed = train_and_evaluate(config, tmp_path / "resumed")
    assert Checkpointer(checkpoint_dir(tmp_path / "resumed"), save_every=0, read_only=True).steps()[-1] == 30

    # the sample: windowed sampling (the family has no KV cache), after the prompt
    assert isinstance(straight["sample"], str) and len(straight["sample"]) > len(config.sample.prompt)

    _, cfg, params, tokenizer = load_run(tmp_path / "straight")
    assert isinstance(cfg, MLPLMConfig) and cfg.vocab_size == tokenizer.vocab_size
    ids = np.asarray(tokenizer.encode("ROMEO:"))[None]
    logits = FAMILY.module(cfg).apply({"params": params}, ids)
    assert logits.shape == (1, ids.shape[1], cfg.vocab_size) and np.isfinite(np.asarray(logits)).all()
    assert resumed["step"] == 30 and np.isfinite(resumed["val_loss"])


def test_resume_of_a_new_family_is_bitwise(tiny_config, tmp_path):
    config = toy_config(tiny_config, 20)
    config.optim.decay_steps = 20  # the schedule does not depend on how far a run goes
    config.sample.num_tokens = 0
    a = train_and_evaluate(config, tmp_path / "a")
    first = config.copy_and_resolve_references()
    first.train.num_steps = 10
    train_and_evaluate(first, tmp_path / "b")
    b = train_and_evaluate(config, tmp_path / "b")
    assert a["val_loss"] == b["val_loss"]
    rows = lambda w: [r for r in read_metrics(w) if r.get("step") == 20]
    assert rows(tmp_path / "a")[0]["train_loss"] == rows(tmp_path / "b")[0]["train_loss"]


def test_muon_takes_the_family_matrices(tiny_config, tmp_path):
    config = toy_config(tiny_config, 10)
    config.optim.name, config.sample.num_tokens = "muon", 0
    summary = train_and_evaluate(config, tmp_path / "w")
    assert summary["status"] == "completed" and np.isfinite(summary["val_loss"])
    dims = FAMILY.matrix_dims(jax.tree.map(np.asarray, load_run(tmp_path / "w")[2]))
    assert dims["fc"]["kernel"] is not None and dims["wte"] is None
