"""Distillation for classification: the class-logit loss and its gradient against NumPy, a tiny distill of a
tiny classify teacher (the teacher in the state stays bit-identical; the student loads like a classify run),
and the one-line error for a teacher with another vocabulary."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpt_jax import run_config
from gpt_jax.cli import finetune
from gpt_jax.models import registry as models
from gpt_jax.tasks.distill_classify import class_distill_loss
from gpt_jax.trainer import train_and_evaluate
from gpt_jax.workdir import load_run, load_state, read_run

CONFIG = "configs/distill/sst2.py"


def tiny(config: str, tfds_cache, n_layer: int, **distill):
    """`config` shrunk to a byte-level classifier of `n_layer` 32-wide layers, 4 steps."""
    c = run_config.load_config(config)
    c.data.tfds_dir, c.data.tokenizer, c.data.vocab_size = str(tfds_cache), "byte", None  # nothing to fit
    c.model.update(n_layer=n_layer, n_head=2, n_embd=32, block_size=32, dropout=0.0)
    c.task.max_len = 32
    c.train.update(batch_size=8, num_steps=4, steps_per_call=2, log_every=2, eval_every=4)
    c.checkpoint.every = 4
    c.optim.warmup_steps = 1
    if distill:
        c.distill.update(distill)
    return c


def np_softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_class_logit_loss_and_gradient_match_numpy(temperature):
    rng = np.random.default_rng(0)
    s, t = rng.standard_normal((5, 3)) * 2, rng.standard_normal((5, 3)) * 2
    labels = np.array([0, 2, 1, 1, 0])
    kw, hw = 0.7, 0.3
    ps, pt, p1 = np_softmax(s / temperature), np_softmax(t / temperature), np_softmax(s)
    kl = temperature**2 * (pt * (np.log(pt) - np.log(ps))).sum()
    ce = -np.log(p1[np.arange(5), labels]).sum()
    got, count = class_distill_loss(
        jnp.asarray(s, jnp.float32), jnp.asarray(t, jnp.float32), labels, temperature, kw, hw
    )
    np.testing.assert_allclose(float(got), kw * kl + hw * ce, rtol=1e-5)
    assert float(count) == 5
    # d/ds: kw * T (p_s^T - p_t^T) + hw (p_s - onehot)
    grad = jax.grad(lambda x: class_distill_loss(x, jnp.asarray(t, jnp.float32), labels, temperature, kw, hw)[0])(
        jnp.asarray(s, jnp.float32)
    )
    want = kw * temperature * (ps - pt) + hw * (p1 - np.eye(3)[labels])
    np.testing.assert_allclose(np.asarray(grad), want, rtol=1e-4, atol=1e-6)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, tfds_cache):
    """A tiny SST-2 classifier from scratch (2 layers, byte tokenizer), 4 steps."""
    workdir = tmp_path_factory.mktemp("teacher")
    train_and_evaluate(tiny("configs/finetune/sst2_scratch.py", tfds_cache, 2), workdir)
    return workdir


def test_distilled_student_trains_teacher_stays_and_loads_like_a_classifier(teacher, tfds_cache, tmp_path):
    workdir = tmp_path / "student"
    summary = train_and_evaluate(tiny(CONFIG, tfds_cache, 1, teacher=str(teacher)), workdir)
    assert summary["status"] == "completed"
    # the frozen teacher in the student's last checkpoint is the teacher's checkpoint, bit for bit
    config, cfg = read_run(workdir)
    state = load_state(workdir, cfg, models.family_of(config.model))
    t_config, t_cfg = read_run(teacher)
    t_state = load_state(teacher, t_cfg, models.family_of(t_config.model))
    assert int(state["step"]) == 4
    want = {"backbone": t_state["params"]["backbone"], "head": t_state["params"]["head"]}
    got = jax.device_get(state["frozen"]["teacher"])
    assert jax.tree.structure(got) == jax.tree.structure(jax.device_get(want))
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(jax.device_get(want)), strict=True):
        assert np.array_equal(np.asarray(a).view(np.uint8), np.asarray(b).view(np.uint8))
    # the student: a 1-layer classifier that moved, and a classification report like any classify run
    _, cfg, params, _ = load_run(workdir)
    assert cfg.n_layer == 1 and "h_1" not in params and "teacher" not in params
    report = json.loads((workdir / "report.json").read_text())
    assert 0.0 <= report["validation_accuracy"] <= 1.0 and report["method"] == "full"
    assert report["trainable_params"] == report["total_params"] > 0  # the teacher is not counted


def test_teacher_with_another_vocabulary_is_one_line_and_writes_nothing(teacher, tfds_cache, tmp_path, capsys):
    workdir = tmp_path / "student"
    argv = [
        f"--config={CONFIG}",
        f"--workdir={workdir}",
        f"--config.distill.teacher={teacher}",
        f"--config.data.tfds_dir={tfds_cache}",
        "--config.model.n_layer=1",
        "--config.data.vocab_size=300",  # the student's own vocabulary: BPE fitted on SST-2, not bytes
    ]
    assert finetune.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: distill.teacher=") and "vocabulary" in err[0]
    assert not workdir.exists() or not any(p.name != ".lock" for p in workdir.rglob("*") if p.is_file())
