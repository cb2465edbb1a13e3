"""Issue 16 data-loss items: non-finite guard, checks before any write, value ranges, trajectory changes,
SIGINT, read-only workdir and disk full. Each test fails on the behaviour the issue reported."""

import hashlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gpt_jax import config_checks, run_config
from gpt_jax.checkpoint import Checkpointer, checkpoint_dir
from gpt_jax.checkpoint_tree import StateTreeMismatchError
from gpt_jax.nonfinite import NonFiniteError, NonFiniteGuard
from gpt_jax.train import TrainState, make_step
from gpt_jax.trainer import train_and_evaluate

REPO = pathlib.Path(__file__).resolve().parents[1]


def snapshot(workdir: pathlib.Path) -> dict[str, str]:
    """{relative path: sha256} of every file: what "byte-identical" means below."""
    return {
        str(p.relative_to(workdir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(workdir.rglob("*"))
        if p.is_file()
    }


def copy_run(tiny_run, tmp_path, name="run"):
    config, run_dir, _ = tiny_run
    workdir = tmp_path / name
    shutil.copytree(run_dir, workdir)
    config = config.copy_and_resolve_references()
    config.sample.num_tokens = 0
    return config, workdir


def cli(*args, timeout=180, **kw):
    env = {**os.environ, "XLA_FLAGS": ""}  # one CPU device, as a user runs it
    return subprocess.run(
        [sys.executable, "-m", "gpt_jax.main", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )


def tiny_cli_args(workdir, tfds_cache, *extra):
    return (
        "--config=configs/tiny.py",
        f"--workdir={workdir}",
        "--config.sample.num_tokens=0",
        f"--config.data.tfds_dir={tfds_cache}",
        "--config.train.eval_batches=2",
        *extra,
    )


# ----------------------------------------------------------------------------- non-finite guard


def _toy_step(skip):
    def loss(params, frozen, batch, rng):
        del frozen, rng
        return jnp.sum((params["w"] * batch["x"]) ** 2), jnp.asarray(1.0)

    tx = optax.sgd(0.1)
    step = jax.jit(make_step(loss, tx, optax.constant_schedule(0.1), skip_nonfinite=skip))
    params = {"w": jnp.ones(3)}
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), rng=jax.random.key(0))
    return step, state


def test_skip_mode_leaves_params_and_optimizer_state_untouched_on_a_nonfinite_step():
    step, state = _toy_step(skip=True)
    good, bad = {"x": jnp.ones(3)}, {"x": jnp.array([1.0, jnp.inf, 1.0])}
    after_good, m = step(state, good)
    assert bool(m["finite"]) and not np.array_equal(after_good.params["w"], state.params["w"])
    after_bad, m = step(after_good, bad)
    assert not bool(m["finite"])
    np.testing.assert_array_equal(after_bad.params["w"], after_good.params["w"])
    assert int(after_bad.step) == 2  # the data moves on
    # without skip the same batch poisons the params: the flag is what the host stops on
    step, state = _toy_step(skip=False)
    after, m = step(state, bad)
    assert not bool(m["finite"]) and not np.isfinite(np.asarray(after.params["w"])).all()


def test_guard_names_the_first_bad_step_and_counts_skips_across_calls():
    guard = NonFiniteGuard("stop", 0, last_good=lambda: "W/checkpoints/20 (step 20)")
    guard.add(20, jnp.array([True, True]))
    guard.add(22, jnp.array([True, False, False]))
    guard.check(keep_last=1)  # the newest call is not read yet
    with pytest.raises(
        NonFiniteError, match=r"at step 24; stopped without saving; last good checkpoint: W/checkpoints/20"
    ):
        guard.check()
    skip = NonFiniteGuard("skip", 3, skipped=2)  # 2 skipped before a restart
    skip.add(0, jnp.array([True, False]))
    skip.check()
    assert skip.skipped == 3
    skip.add(2, jnp.array([False]))
    with pytest.raises(
        NonFiniteError, match=r"4 non-finite steps skipped \(last at step 3\), over train.max_nonfinite_skips=3"
    ):
        skip.check()
    with pytest.raises(ValueError, match="on_nonfinite='never'"):
        NonFiniteGuard("never", 0)


def test_diverged_resume_stops_exits_3_and_keeps_the_good_checkpoints(tiny_run, tmp_path, tfds_cache):
    """The issue's repro: good checkpoints 20 and 40, then lr=1e3 with keep=2 and saves every 20."""
    _, workdir = copy_run(tiny_run, tmp_path)
    before = Checkpointer(checkpoint_dir(workdir), save_every=0, read_only=True).steps()
    assert before == [20, 40]
    r = cli(
        *tiny_cli_args(
            workdir,
            tfds_cache,
            "--config.train.num_steps=100",
            "--config.checkpoint.every=20",
            "--config.train.eval_every=20",
            "--config.optim.lr=1e3",
            "--config.train.allow_changes=True",
        )
    )
    assert r.returncode == 3, r.stderr[-2000:]
    err = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "Traceback" not in r.stderr
    assert "non-finite loss or gradient norm at step" in err[0]
    assert f"last good checkpoint: {checkpoint_dir(workdir) / '40'} (step 40)" in err[0]
    assert Checkpointer(checkpoint_dir(workdir), save_every=0, read_only=True).steps() == [20, 40]
    assert json.loads((workdir / "summary.json").read_text())["status"] == "stopped_nonfinite"
    for line in (workdir / "metrics.jsonl").read_text().splitlines():
        assert all(np.isfinite(v) for v in json.loads(line).values() if isinstance(v, float)), line


def test_skip_mode_stops_once_the_cap_is_passed_and_saves_only_finite_states(tiny_config, tmp_path):
    config = tiny_config()
    config.optim.lr, config.optim.warmup_steps = 1e4, 0
    config.train.on_nonfinite, config.train.max_nonfinite_skips = "skip", 3
    config.train.num_steps, config.checkpoint.every = 40, 10
    with pytest.raises(NonFiniteError, match="over train.max_nonfinite_skips=3"):
        train_and_evaluate(config, tmp_path / "w")
    ckpt = Checkpointer(checkpoint_dir(tmp_path / "w"), save_every=0, read_only=True)
    for step in ckpt.steps():  # whatever was saved before the cap holds finite params only
        meta = ckpt.read_meta(step)
        assert meta["nonfinite_skips"] <= 3


# ----------------------------------------------------------------------------- checks before writes


@pytest.mark.parametrize(
    "key,value",
    [("optim.name", "lion"), ("seed", 1), ("train.batch_size", 16), ("optim.lr", 1e-2), ("model.n_layer", 3)],
)
def test_refused_resume_leaves_the_workdir_byte_identical(tiny_run, tmp_path, key, value):
    config, workdir = copy_run(tiny_run, tmp_path)
    before = snapshot(workdir)
    section, _, leaf = key.rpartition(".")
    (config[section] if section else config)[leaf] = value
    with pytest.raises(ValueError) as e:
        train_and_evaluate(config, workdir)
    msg = str(e.value)
    assert "\n" not in msg and key.split(".")[-1] in msg and str(workdir) in msg
    assert snapshot(workdir) == before


def test_an_allowed_change_that_cannot_restore_is_one_line_and_writes_nothing(tiny_run, tmp_path):
    config, workdir = copy_run(tiny_run, tmp_path)
    before = snapshot(workdir)
    config.optim.name, config.train.allow_changes = "lion", True
    with pytest.raises(StateTreeMismatchError) as e:
        train_and_evaluate(config, workdir)
    assert "\n" not in str(e.value) and "opt_state" in str(e.value) and "init_from" in str(e.value)
    assert snapshot(workdir) == before


def test_an_allowed_change_resumes_and_is_recorded_in_the_run_history(tiny_run, tmp_path):
    config, workdir = copy_run(tiny_run, tmp_path)
    old_lr = config.optim.lr
    config.optim.lr, config.train.allow_changes = old_lr / 2, True
    config.train.num_steps = 50  # a longer schedule is a trajectory change too
    summary = train_and_evaluate(config, workdir)
    assert summary["status"] == "completed" and summary["step"] == 50
    history = [json.loads(line) for line in (workdir / run_config.HISTORY_FILE).read_text().splitlines()]
    assert history[-1]["event"] == "resume" and history[-1]["step"] == 40
    assert history[-1]["changes"]["optim.lr"] == [old_lr, old_lr / 2]
    assert any("train.num_steps" in k for k in history[-1]["changes"])
    assert json.loads((workdir / "config.json").read_text())["optim"]["lr"] == old_lr / 2


def test_cadence_and_mesh_changes_resume_without_the_flag(tiny_run, tmp_path):
    config, workdir = copy_run(tiny_run, tmp_path)
    config.train.log_every, config.train.eval_every, config.checkpoint.keep = 20, 40, 3
    assert run_config.check_resume(workdir, config) == {}


@pytest.mark.parametrize(
    "key,value",
    [
        ("train.num_steps", -5),
        ("optim.lr", -0.01),
        ("model.dropout", 1.5),
        ("optim.warmup_steps", -10),
        ("train.eval_batches", 0),
        ("checkpoint.keep", 0),
        ("optim.b2", 1.0),
    ],
)
def test_values_out_of_range_are_one_line_errors(tiny_config, key, value):
    config = tiny_config()
    section, _, leaf = key.rpartition(".")
    config[section][leaf] = value
    with pytest.raises(ValueError) as e:
        config_checks.validate(config)
    assert f"config.{key}={value!r}" in str(e.value) and "\n" not in str(e.value)


def test_cli_refuses_a_bad_value_before_creating_the_workdir(tmp_path):
    r = cli("--config=configs/tiny.py", f"--workdir={tmp_path / 'w'}", "--config.train.num_steps=-5")
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("error: config.train.num_steps=-5")
    assert not (tmp_path / "w").exists()


# ----------------------------------------------------------------------------- signals and filesystems


def test_sigint_saves_like_sigterm_and_exits_130(tmp_path, tfds_cache):
    workdir = tmp_path / "w"
    args = tiny_cli_args(
        workdir,
        tfds_cache,
        "--config.train.num_steps=100000",
        "--config.checkpoint.every=0",
        "--config.train.eval_every=0",
        "--config.train.steps_per_call=1",
        "--config.train.log_every=1",
    )
    env = {**os.environ, "XLA_FLAGS": ""}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpt_jax.main", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not ((workdir / "metrics.jsonl").exists() and (workdir / "metrics.jsonl").read_text().count("\n") >= 3):
        assert proc.poll() is None and time.time() < deadline, "training never started"
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    summary = json.loads(out[: out.rindex("}") + 1])
    assert summary["status"] == "interrupted"
    assert Checkpointer(checkpoint_dir(workdir), save_every=0, read_only=True).steps() == [summary["step"]]
    assert f"interrupted at step {summary['step']}" in err


@pytest.fixture
def small_fs(tmp_path):
    """A 16 MiB tmpfs (root only; CI runs as root on the project's machines)."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode:  # CI runs as root on the project's machines: there it must run, never skip
        (pytest.fail if os.environ.get("CI") == "true" else pytest.skip)(
            f"cannot mount a tmpfs here ({r.stderr.strip()}): needs root"
        )
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_is_one_line_and_keeps_the_last_checkpoint(tiny_run, tmp_path, small_fs, tfds_cache):
    _, run_dir, _ = tiny_run
    workdir = small_fs / "w"
    shutil.copytree(run_dir, workdir)
    free_kb = shutil.disk_usage(small_fs).free // 1024
    subprocess.run(
        ["dd", "if=/dev/zero", f"of={small_fs / 'filler'}", "bs=1k", f"count={free_kb - 100}"],
        check=True,
        capture_output=True,
    )
    args = tiny_cli_args(
        workdir,
        tfds_cache,
        "--config.train.num_steps=60",
        "--config.checkpoint.every=20",
        "--config.train.eval_every=20",
        "--config.train.allow_changes=True",
    )
    r = cli(*args)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and str(workdir) in last and "free space" in last
    assert Checkpointer(checkpoint_dir(workdir), save_every=0, read_only=True).steps() == [20, 40]
    (small_fs / "filler").unlink()
    r = cli(*args)
    assert r.returncode == 0, r.stderr[-2000:]


def test_read_only_workdir_is_refused_before_training(tiny_run, small_fs, tfds_cache):
    _, run_dir, _ = tiny_run
    shutil.copytree(run_dir, small_fs / "w")
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    r = cli(
        *tiny_cli_args(small_fs / "w", tfds_cache, "--config.train.num_steps=60", "--config.train.allow_changes=True")
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        f"error: workdir {small_fs / 'w'} is not writable (Read-only file system); "
        "choose another --workdir or fix its permissions"
    )


def test_a_run_that_fails_its_checks_leaves_no_new_workdir(tiny_config, tmp_path):
    config = tiny_config()
    config.data.manual_dir = str(tmp_path / "no_data_here")
    with pytest.raises(FileNotFoundError):
        train_and_evaluate(config, tmp_path / "w")
    assert not (tmp_path / "w").exists()
