"""Issue 19, a GAN run through the one trainer (configs/gan/digits_tiny.py, 8x8 digits): sample grids
written, resumed after SIGTERM bit for bit, `gpt_jax.sample` writes a grid, `gpt_jax.gan_eval` scores it."""

import json
import os
import pathlib
import signal

import jax
import numpy as np
import pytest
from PIL import Image

from gpt_jax import run_config
from gpt_jax import trainer as trainer_lib
from gpt_jax.cli import gan_eval, sample
from gpt_jax.metrics import read_metrics
from gpt_jax.models import dcgan
from gpt_jax.workdir import load_state, read_run

REPO = pathlib.Path(__file__).resolve().parents[1]
STEPS = 20


def gan_config():
    c = run_config.load_config(str(REPO / "configs" / "gan" / "digits_tiny.py"))
    c.train.num_steps, c.train.log_every, c.train.eval_every = STEPS, 5, 10
    c.checkpoint.every, c.gan.grid_every = 10, 10
    return c


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("gan_straight")
    return workdir, trainer_lib.train_and_evaluate(gan_config(), workdir)


def test_grids_and_final_sample_are_written(straight):
    workdir, summary = straight
    assert summary["status"] == "completed" and pathlib.Path(summary["sample_grid"]) == workdir / "samples.png"
    assert sorted(p.name for p in (workdir / "grids").iterdir()) == ["step_000010.png", "step_000020.png"]
    grid = np.asarray(Image.open(workdir / "grids" / "step_000020.png"))
    assert grid.shape == (10 * (8 + 2) + 2, 10 * (8 + 2) + 2) and grid.dtype == np.uint8 and grid.max() > 0
    assert Image.open(workdir / "samples.png").size == (2 * 102, 2 * 102)
    assert not (workdir / "tokenizer.json").exists()  # images: no tokenizer saved
    config, cfg = read_run(workdir)
    assert isinstance(cfg, dcgan.DCGANConfig) and cfg.image_size == 8 and config.task.name == "gan"
    rows = [r for r in read_metrics(workdir) if "val_loss" in r]
    assert {"val_d_accuracy", "val_g_loss"} <= set(rows[-1])


def test_resume_after_sigterm_is_bitwise_identical(straight, tmp_path, monkeypatch):
    workdir_a, summary_a = straight
    preempt_at, sent = 15, []  # between checkpoints (every 10): the SIGTERM save is a forced one
    real_run_steps = trainer_lib.Trainer.run_steps

    def run_steps(self, state, step, k):
        out = real_run_steps(self, state, step, k)
        if step + k == preempt_at and not sent:
            sent.append(step + k)
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    monkeypatch.setattr(trainer_lib.Trainer, "run_steps", run_steps)
    first = trainer_lib.train_and_evaluate(gan_config(), tmp_path / "b")
    assert sent == [preempt_at] and first["status"] == "preempted" and first["step"] == preempt_at
    monkeypatch.setattr(trainer_lib.Trainer, "run_steps", real_run_steps)
    second = trainer_lib.train_and_evaluate(gan_config(), tmp_path / "b")
    assert second["status"] == "completed" and second["val_loss"] == summary_a["val_loss"]

    _, cfg = read_run(workdir_a)
    family = dcgan.FAMILY
    a = load_state(workdir_a, cfg, family, step=STEPS)
    b = load_state(tmp_path / "b", cfg, family, step=STEPS)
    assert set(a["params"]) == {"generator", "discriminator", "generator_ema"}
    raw = lambda x: np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x)
    same = jax.tree.map(lambda x, y: np.array_equal(raw(x), raw(y)), a, b)
    assert all(jax.tree.leaves(same))
    rows_a = {r["step"]: r for r in read_metrics(workdir_a)}
    rows_b = {r["step"]: r for r in read_metrics(tmp_path / "b")}
    for step in (5, 10, 20):
        for key in ("discriminator_loss", "generator_loss", "generator_ema_loss"):
            assert rows_a[step][key] == rows_b[step][key], (step, key)
    assert (tmp_path / "b" / "grids" / "step_000020.png").read_bytes() == (
        workdir_a / "grids" / "step_000020.png"
    ).read_bytes()


def test_sample_cli_writes_an_image_grid(straight, capsys):
    workdir, _ = straight
    assert sample.main([f"--workdir={workdir}", "--num_samples=30", "--seed=3"]) == 0
    path = workdir / "sample_seed3.png"
    assert f"wrote {path}" in capsys.readouterr().out
    assert Image.open(path).size == (2 * 102, 2 * (3 * 10 + 2))  # 3 rows of 10, each pixel 2x2


def test_gan_eval_scores_every_checkpoint(straight, tmp_path, capsys):
    workdir, _ = straight
    argv = [f"--workdir={workdir}", f"--classifier_dir={tmp_path / 'clf'}", "--num_samples=200", "--all_checkpoints"]
    assert gan_eval.main(argv) == 0
    out = capsys.readouterr().out
    assert "real train (floor)" in out and "classifier held-out accuracy" in out
    result = json.loads((workdir / "gan_eval.json").read_text())
    assert [c["step"] for c in result["curve"]] == [10, 20] and (workdir / "fd_curve.png").is_file()
    floor, fake = result["real_vs_held_out"], result["samples"]
    assert result["classifier"]["held_out_accuracy"] > 0.85  # the CNN works on sklearn digits
    assert floor["confident_share"] > fake["confident_share"]  # 20 steps of GAN: far from real digits
    assert floor["frechet_distance"] < fake["frechet_distance"]
    assert sum(fake["class_histogram"]) == 200 and 0 <= fake["class_entropy_share_of_max"] <= 1
    assert (tmp_path / "clf" / "classifier.msgpack").is_file()  # cached: a second call does not retrain
    info = json.loads((tmp_path / "clf" / "classifier.json").read_text())
    assert info["dataset"] == "sklearn_digits"


def test_gan_eval_refuses_a_text_run(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"task": {"name": "lm"}}))
    assert gan_eval.main([f"--workdir={tmp_path}"]) == 2
    assert "is not a GAN run" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]
