"""Distillation: the temperature-scaled KL and its gradient against NumPy, the teacher vocabulary check,
and a short distill run whose student loads like any workdir."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpt_jax.cli import train
from gpt_jax.evaluation import evaluate_workdir
from gpt_jax.tasks.distill import distill_kl
from gpt_jax.workdir import load_run

CONFIG = "configs/distill/shakespeare_char_cpu.py"


def np_softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_kl_and_gradient_match_numpy(temperature):
    rng = np.random.default_rng(0)
    s, t = rng.standard_normal((2, 3, 7)) * 3, rng.standard_normal((2, 3, 7)) * 3
    w = np.array([[1, 1, 0], [1, 0, 1]], np.float32)
    ps, pt = np_softmax(s / temperature), np_softmax(t / temperature)
    kl = temperature**2 * (pt * (np.log(pt) - np.log(ps))).sum(-1)
    got, count = distill_kl(jnp.asarray(s, jnp.float32), jnp.asarray(t, jnp.float32), temperature)
    np.testing.assert_allclose(float(got), kl.sum(), rtol=1e-5)
    assert float(count) == 6
    got_w, count_w = distill_kl(jnp.asarray(s, jnp.float32), jnp.asarray(t, jnp.float32), temperature, jnp.asarray(w))
    np.testing.assert_allclose(float(got_w), (kl * w).sum(), rtol=1e-5)
    assert float(count_w) == 4
    # d/ds of T^2 KL(p_t || p_s) is T (p_s - p_t) per token
    grad = jax.grad(lambda x: distill_kl(x, jnp.asarray(t, jnp.float32), temperature, jnp.asarray(w))[0])(
        jnp.asarray(s, jnp.float32)
    )
    np.testing.assert_allclose(np.asarray(grad), temperature * (ps - pt) * w[..., None], rtol=1e-4, atol=1e-6)


def overrides(teacher, tfds_cache):
    return [
        f"--config.distill.teacher={teacher}",
        f"--config.data.tfds_dir={tfds_cache}",
        "--config.model.n_layer=1",
        "--config.model.n_head=2",
        "--config.model.n_embd=32",
        "--config.model.block_size=32",
        "--config.train.batch_size=8",
        "--config.train.num_steps=4",
        "--config.train.steps_per_call=2",
        "--config.train.eval_every=4",
        "--config.train.eval_batches=2",
        "--config.checkpoint.every=4",
        "--config.sample.num_tokens=0",
    ]


def test_teacher_with_another_vocabulary_is_one_line_and_writes_nothing(tiny_run, tfds_cache, tmp_path, capsys):
    _, teacher, _ = tiny_run
    workdir = tmp_path / "student"
    argv = [
        f"--config={CONFIG}",
        f"--workdir={workdir}",
        *overrides(teacher, tfds_cache),
        "--config.data.tokenizer=byte",
    ]
    assert train.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: distill.teacher=") and "vocabulary" in err
    assert not workdir.exists() or not any(p.name != ".lock" for p in workdir.rglob("*") if p.is_file())


def test_missing_teacher_is_one_line(tfds_cache, tmp_path, capsys):
    argv = [f"--config={CONFIG}", f"--workdir={tmp_path / 's'}", f"--config.data.tfds_dir={tfds_cache}"]
    assert train.main(argv) == 2
    assert "--config.distill.teacher=" in capsys.readouterr().err


def test_distilled_student_trains_and_loads_like_any_run(tiny_run, tfds_cache, tmp_path):
    _, teacher, _ = tiny_run
    workdir = tmp_path / "student"
    assert train.main([f"--config={CONFIG}", f"--workdir={workdir}", *overrides(teacher, tfds_cache)]) == 0
    _, cfg, params, _ = load_run(workdir)
    assert cfg.n_layer == 1 and "h_1" not in params and params["wte"].shape == (cfg.vocab_size, 32)
    assert "teacher" not in params
    got = evaluate_workdir(str(workdir))
    assert got["step"] == 4 and np.isfinite(got["val_loss"])
