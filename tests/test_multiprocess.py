"""Two real processes on 127.0.0.1 (JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID, gloo CPU
collectives, one CPU device each) train configs/tiny.py on a mesh spanning both, as the README's multi-host
launch does: same losses as one process, each process feeds its own rows, one checkpoint that a one-process
run resumes on another mesh."""

from __future__ import annotations

import json
import logging
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from gpt_jax import sharding as shd
from gpt_jax.metrics import read_metrics
from gpt_jax.tasks.registry import make_task
from gpt_jax.trainer import train_and_evaluate

REPO = pathlib.Path(__file__).resolve().parents[1]
STEPS, EVERY = 20, 10
# On top of conftest's tiny_config in this process and on the two processes' command lines: one trajectory.
OVERRIDES = {
    "train.num_steps": STEPS,
    "train.steps_per_call": EVERY,
    "train.log_every": EVERY,
    "train.eval_every": EVERY,
    "train.eval_batches": 2,
    "checkpoint.every": EVERY,
    "sample.num_tokens": 0,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_two_processes(workdir: pathlib.Path, tfds_dir: pathlib.Path, timeout: float = 240) -> list[tuple[str, str]]:
    """`python -m gpt_jax.main` as processes 0 and 1 of one job; (stdout, stderr) of each. A process that
    fails stops the other (which would otherwise wait for it at the next collective)."""
    args = [sys.executable, "-m", "gpt_jax.main", f"--config={REPO / 'configs' / 'tiny.py'}", f"--workdir={workdir}"]
    # The end-of-run sample too: its PRNG key goes onto the mesh spanning both processes.
    args += [f"--config.{k}={v}" for k, v in {**OVERRIDES, "sample.num_tokens": 16}.items()]
    args += [f"--config.data.tfds_dir={tfds_dir}", "--config.train.compile_cache_dir="]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "OMPI_", "TPU_", "JAX_"))}
    env.update(
        JAX_PLATFORMS="cpu",
        XLA_FLAGS="",  # one CPU device per process (conftest asks for 8 in this one)
        JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{free_port()}",
        JAX_NUM_PROCESSES="2",
        JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo",
    )
    logs = [(workdir.parent / f"proc{i}.out", workdir.parent / f"proc{i}.err") for i in range(2)]
    procs = []
    for i, (out, err) in enumerate(logs):
        with open(out, "w") as o, open(err, "w") as e:
            procs.append(subprocess.Popen(args, cwd=REPO, env={**env, "JAX_PROCESS_ID": str(i)}, stdout=o, stderr=e))
    deadline = time.monotonic() + timeout
    try:
        while any(p.poll() is None for p in procs):
            if any(p.returncode not in (None, 0) for p in procs) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait()
    texts = [(out.read_text(), err.read_text()) for out, err in logs]
    for i, (p, (_, err)) in enumerate(zip(procs, texts)):
        assert p.returncode == 0, f"process {i} exited with {p.returncode}:\n{err[-3000:]}"
    return texts


def summary_of(stdout: str) -> tuple[dict, str]:
    """(summary, sample) from what gpt_jax.main prints."""
    start, end = stdout.index("{\n"), stdout.index("\n}\n") + 2
    return json.loads(stdout[start:end]), stdout[end:].partition("---- sample ----\n")[2]


def test_two_processes_train_like_one_and_one_resumes(tiny_config, tfds_cache, tmp_path, caplog):
    def config():
        c = tiny_config()
        for dotted, value in OVERRIDES.items():
            group, key = dotted.split(".")
            c[group][key] = value
        return c

    # One process, all 8 of the test process's CPU devices, the same global batches.
    one = train_and_evaluate(config(), tmp_path / "one")
    one_val = {r["step"]: r["val_loss"] for r in read_metrics(tmp_path / "one") if "val_loss" in r}

    # The rows a process feeds: its contiguous share of every global batch, train and eval alike.
    task = make_task(config(), tmp_path / "one")
    for rows in (lambda i, n: task.train_batches(3, 2, i, n), lambda i, n: task.eval_batches(i, n)):
        whole, halves = rows(0, 1), [rows(i, 2) for i in range(2)]
        for key, value in whole.items():
            assert halves[0][key].shape[1] == value.shape[1] // 2
            np.testing.assert_array_equal(np.concatenate([h[key] for h in halves], axis=1), value)

    two = tmp_path / "two" / "run"
    two.parent.mkdir()
    (out0, err0), (out1, err1) = launch_two_processes(two, tfds_cache)
    for i, err in enumerate((err0, err1)):
        assert f"joined 2 processes as process {i} (1 of 2 devices local)" in err, err[-2000:]
        assert f"process {i} of 2 loads 4 of the 8 rows of each batch" in err, err[-2000:]
    (s0, sample0), (s1, sample1) = summary_of(out0), summary_of(out1)
    assert s0["devices"] == s1["devices"] == 2 and s0["step"] == STEPS
    assert s0["val_loss"] == s1["val_loss"]  # one replicated result, fetched by both
    assert len(sample0) > 16 and sample0 == sample1
    two_val = {r["step"]: r["val_loss"] for r in read_metrics(two) if "val_loss" in r}
    assert sorted(two_val) == sorted(one_val) == [EVERY, STEPS]
    for step in two_val:
        assert abs(two_val[step] - one_val[step]) < 1e-5, (step, two_val[step], one_val[step])
    assert two_val[STEPS] == pytest.approx(s0["val_loss"]) and one["val_loss"] == pytest.approx(one_val[STEPS])

    # Written once: one writer of metrics/TensorBoard/summary, one set of committed step dirs.
    assert [r["step"] for r in read_metrics(two)] == [EVERY, STEPS]
    assert len(list((two / "tb").glob("events.out.tfevents.*"))) == 1
    assert json.loads((two / "summary.json").read_text())["val_loss"] == s0["val_loss"]
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == [str(EVERY), str(STEPS)]
    for step in (EVERY, STEPS):
        state = two / "checkpoints" / str(step) / "state"
        assert (two / "checkpoints" / str(step) / "commit_success.txt").is_file()
        assert sorted(p.name for p in state.glob("ocdbt.process_*")) == ["ocdbt.process_0", "ocdbt.process_1"]

    # One process resumes the two-process run's step-10 checkpoint on its 8-device mesh and continues.
    resumed = tmp_path / "resumed"
    shutil.copytree(two, resumed)
    shutil.rmtree(resumed / "checkpoints" / str(STEPS))
    with caplog.at_level(logging.INFO, logger="gpt_jax.trainer"):
        summary = train_and_evaluate(config(), resumed)
    assert f"resumed from step {EVERY}" in caplog.text and not (resumed / "metrics.jsonl.old").exists()
    assert summary["step"] == STEPS and summary["devices"] == 8
    assert [r["step"] for r in read_metrics(resumed)] == [EVERY, STEPS]
    assert abs(summary["val_loss"] - two_val[STEPS]) < 1e-5, (summary["val_loss"], two_val[STEPS])


def test_launch_environment(monkeypatch):
    for name in shd.LAUNCH_ENV:
        monkeypatch.delenv(name, raising=False)
    assert shd.distributed_launch() is None
    monkeypatch.setenv("SLURM_NTASKS", "1")  # one task of a Slurm job: no cluster to join
    assert shd.distributed_launch() is None
    monkeypatch.setenv("SLURM_NTASKS", "4")
    assert shd.distributed_launch() == {}  # JAX reads the rest from Slurm
    monkeypatch.setenv("GPT_JAX_NO_DISTRIBUTED", "1")
    assert shd.distributed_launch() is None
    monkeypatch.delenv("GPT_JAX_NO_DISTRIBUTED")
    monkeypatch.delenv("SLURM_NTASKS")
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "127.0.0.1:1234")
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES and JAX_PROCESS_ID are not"):
        shd.distributed_launch()
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    monkeypatch.setenv("JAX_PROCESS_ID", "2")
    with pytest.raises(ValueError, match=r"JAX_PROCESS_ID=2 is not in \[0, JAX_NUM_PROCESSES=2\)"):
        shd.distributed_launch()
    monkeypatch.setenv("JAX_PROCESS_ID", "1")
    assert shd.distributed_launch() == {"num_processes": 2, "process_id": 1}
    # This process's backend runs already: joining now would fail inside JAX, so say what to do instead.
    jax.devices()
    with pytest.raises(RuntimeError, match="backend already started"):
        shd.maybe_initialize_distributed()
