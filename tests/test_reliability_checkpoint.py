"""Reliability of workdirs and checkpoints: one trainer per workdir (lock), integrity records with fallback
to the previous good checkpoint (restore, trainer resume, evaluate, load_run, export), garbage collection
that keeps the last good step, and a reduced fault-injection run (benchmarks/fault_injection.py)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from test_checkpoint import REPO, assert_bitwise_equal, make_state

from benchmarks import fault_injection as fi
from gpt_jax import checkpoint_integrity, hf
from gpt_jax import trainer as trainer_lib
from gpt_jax.checkpoint import (
    CheckpointCorruptError,
    Checkpointer,
    NoReadableCheckpointError,
    abstract_like,
    checkpoint_dir,
    restore_target,
)
from gpt_jax.evaluation import evaluate_workdir
from gpt_jax.metrics import read_metrics
from gpt_jax.workdir import load_run
from gpt_jax.workdir_lock import LOCK_FILE, WorkdirLock, WorkdirLockedError

ABSTRACT = abstract_like(make_state(1))  # every make_state(seed) has these shapes


def save(directory, steps, *, keep=5, async_save=True):
    """Step s holds make_state(seed=s) and meta {"step": s}."""
    with Checkpointer(directory, save_every=1, keep=keep, async_save=async_save) as ckpt:
        for s in steps:
            assert ckpt.maybe_save(s, make_state(seed=s), {"step": s})


def skip_warnings(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "skipping checkpoint" in r.getMessage()
    ]


# --- workdir lock -------------------------------------------------------------------------------------


def test_lock_refuses_a_second_holder_naming_the_first(tmp_path):
    workdir = tmp_path / "w"
    with WorkdirLock(workdir) as lock:
        assert lock.held
        holder = json.loads((workdir / LOCK_FILE).read_text())
        assert holder["pid"] == os.getpid() and holder["host"]
        with pytest.raises(WorkdirLockedError) as e:
            WorkdirLock(workdir).acquire()  # flock is per open file: the same process is refused too
        msg = str(e.value)
        assert "\n" not in msg
        assert f"pid {os.getpid()}" in msg and str(workdir) in msg and "--workdir" in msg
    assert not (workdir / LOCK_FILE).exists()  # released and removed
    assert not workdir.exists()  # the lock created the workdir and nothing else was written: removed too
    workdir.mkdir()
    with WorkdirLock(workdir):
        (workdir / "metrics.jsonl").write_text("")
    assert sorted(os.listdir(workdir)) == ["metrics.jsonl"]
    # A non-primary process of a multi-process run takes no lock.
    with WorkdirLock(workdir), WorkdirLock(workdir, enabled=False) as other:
        assert not other.held


def test_lock_of_a_killed_trainer_is_taken_over(tmp_path, caplog):
    workdir = tmp_path / "w"
    code = f"import time; from gpt_jax.workdir_lock import WorkdirLock; WorkdirLock({str(workdir)!r}).acquire(); print('locked', flush=True); time.sleep(120)"
    child = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(WorkdirLockedError, match=f"pid {child.pid},"):
            WorkdirLock(workdir).acquire()
    finally:
        child.kill()  # SIGKILL: no cleanup runs; the kernel drops the flock
        child.wait()
    assert json.loads((workdir / LOCK_FILE).read_text())["pid"] == child.pid  # the stale file is still there
    with caplog.at_level(logging.INFO, logger="gpt_jax.workdir_lock"), WorkdirLock(workdir):
        assert json.loads((workdir / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert any(f"pid {child.pid}" in r.getMessage() and "took over" in r.getMessage() for r in caplog.records)


def test_second_trainer_on_a_workdir_is_refused_in_one_line(tmp_path):
    workdir = tmp_path / "w"
    with WorkdirLock(workdir):  # a live trainer
        proc = subprocess.run(
            [sys.executable, "-m", "gpt_jax.main", "--config=configs/tiny.py", f"--workdir={workdir}",
             "--config.sample.num_tokens=0", "--config.optim.lr=1e-2", "--config.seed=1"],
            cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert os.listdir(workdir) == [LOCK_FILE]  # the refused trainer wrote nothing
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-2000:]
    assert f"workdir {workdir} is in use by another trainer" in errors[0] and f"pid {os.getpid()}," in errors[0]


# --- integrity records --------------------------------------------------------------------------------


@pytest.mark.parametrize("async_save", [False, True])
def test_integrity_record_covers_every_file(tmp_path, async_save):
    save(tmp_path, [3], async_save=async_save)
    step_dir = tmp_path / "3"
    record = json.loads((step_dir / checkpoint_integrity.RECORD_FILE).read_text())
    on_disk = {p.relative_to(step_dir).as_posix() for p in step_dir.rglob("*") if p.is_file()}
    unrecorded = {"_CHECKPOINT_METADATA", "commit_success.txt", checkpoint_integrity.RECORD_FILE}
    assert set(record["files"]) == on_disk - unrecorded
    assert {"state/_METADATA", "meta/metadata"} <= set(record["files"])
    for rel, (size, digest) in record["files"].items():
        data = (step_dir / rel).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (size, digest), rel
    assert Checkpointer(tmp_path, save_every=0, read_only=True).verify(3) is None


@pytest.mark.parametrize("corruption", sorted(fi.CORRUPTIONS))
def test_corrupt_latest_checkpoint_falls_back_to_the_previous(tmp_path, caplog, corruption):
    save(tmp_path, [1, 2])
    fi.CORRUPTIONS[corruption](tmp_path / "2")
    reader = Checkpointer(tmp_path, save_every=0, read_only=True)
    problem = reader.verify(2)
    assert problem and "\n" not in problem
    with pytest.raises(CheckpointCorruptError, match=f"checkpoint {tmp_path / '2'} is unusable"):
        reader.restore(ABSTRACT, step=2)
    with caplog.at_level(logging.WARNING):
        state, meta, step = reader.restore_latest_good(ABSTRACT)
    assert (step, meta) == (1, {"step": 1})
    assert_bitwise_equal(state, make_state(seed=1))
    (warning,) = skip_warnings(caplog)
    assert str(tmp_path / "2") in warning and problem in warning and "\n" not in warning
    assert reader.latest_good_step() == 1
    reader.close()
    assert (tmp_path / "2").is_dir()  # a reader never moves anything

    # The trainer's (writable) Checkpointer moves the broken step aside, keeps it, and can save that step again.
    with Checkpointer(tmp_path, save_every=1, keep=2) as ckpt:
        assert ckpt.restore_latest_good(ABSTRACT)[2] == 1
        assert ckpt.steps() == [1]
        assert (tmp_path / "2.corrupt" / "QUARANTINED.txt").read_text().strip() == problem
        assert ckpt.maybe_save(2, make_state(seed=5), {"step": 2})
        assert ckpt.maybe_save(3, make_state(seed=6), {"step": 3})
        ckpt.wait()
        assert ckpt.steps() == [2, 3]
        assert_bitwise_equal(ckpt.restore(ABSTRACT, step=2)[0], make_state(seed=5))
    assert (tmp_path / "2.corrupt").is_dir()  # never garbage-collected


def test_checkpoint_without_a_record_is_accepted_as_legacy(tmp_path, caplog):
    save(tmp_path, [1, 2])
    for s in (1, 2):
        (tmp_path / str(s) / checkpoint_integrity.RECORD_FILE).unlink()
    reader = Checkpointer(tmp_path, save_every=0, read_only=True)
    assert reader.verify(2) is None
    assert reader.restore_latest_good(ABSTRACT)[2] == 2
    # Unverifiable, but a legacy step that fails to read still falls back.
    fi.CORRUPTIONS["truncated data file"](tmp_path / "2")
    with caplog.at_level(logging.WARNING):
        state, _, step = reader.restore_latest_good(ABSTRACT)
    assert step == 1
    assert_bitwise_equal(state, make_state(seed=1))
    (warning,) = skip_warnings(caplog)
    assert "could not be read" in warning and "\n" not in warning


def test_no_readable_checkpoint_is_one_line_naming_the_directory(tmp_path):
    with pytest.raises(NoReadableCheckpointError, match="no complete checkpoint in"):
        Checkpointer(tmp_path / "none", save_every=0, read_only=True).restore_latest_good(ABSTRACT)
    save(tmp_path, [1, 2])
    with pytest.raises(NoReadableCheckpointError, match=r"no checkpoint .*/7; the complete ones are steps \[1, 2\]"):
        Checkpointer(tmp_path, save_every=0, read_only=True).restore(ABSTRACT, step=7)
    for s in (1, 2):
        fi.CORRUPTIONS["empty state/_METADATA"](tmp_path / str(s))
    with Checkpointer(tmp_path, save_every=1) as ckpt, pytest.raises(NoReadableCheckpointError) as e:
        ckpt.restore_latest_good(ABSTRACT)
    msg = str(e.value)
    assert "\n" not in msg and f"no readable checkpoint in {tmp_path}" in msg and "2: state/_METADATA" in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "2"]  # nothing moved when nothing is usable


def test_garbage_collection_keeps_the_last_good_step(tmp_path):
    """keep=1, async: Orbax alone would keep only the newest step; if that one is then found bad (a
    non-finite guard, a failed verify) nothing good would be left."""
    with Checkpointer(tmp_path, save_every=1, keep=1) as ckpt:
        for s in (1, 2, 3):
            ckpt.maybe_save(s, make_state(seed=s), {"step": s})
        ckpt.wait()
        assert ckpt.steps() == [2, 3]  # 2 stays until a step after it commits
        ckpt.quarantine(3, "non-finite loss", tag="nonfinite")
        assert ckpt.steps() == [2]
        assert ckpt.restore_latest_good(ABSTRACT)[2] == 2
        for s in (4, 5, 6):
            ckpt.maybe_save(s, make_state(seed=s), {"step": s})
        ckpt.wait()
        assert ckpt.steps() == [5, 6]
    assert (tmp_path / "3.nonfinite" / "QUARANTINED.txt").read_text().strip() == "non-finite loss"


# --- the trainer and the readers on a real run -------------------------------------------------------


def copy_run(tiny_run, tmp_path, name):
    config, run_dir, summary = tiny_run
    workdir = tmp_path / name
    shutil.copytree(run_dir, workdir)
    config = config.copy_and_resolve_references()
    config.sample.num_tokens = 0
    return config, workdir, summary


def test_trainer_resumes_from_the_previous_checkpoint_with_identical_losses(tiny_run, tmp_path, caplog):
    config, workdir, summary_ref = copy_run(tiny_run, tmp_path, "broken")
    fi.CORRUPTIONS["truncated data file"](checkpoint_dir(workdir) / "40")
    with caplog.at_level(logging.WARNING):
        summary = trainer_lib.train_and_evaluate(config, workdir)
    (warning,) = skip_warnings(caplog)
    assert str(checkpoint_dir(workdir) / "40") in warning
    # Steps 21-40 were trained again from checkpoint 20: the same losses as the uninterrupted run.
    ref_rows, rows = read_metrics(tiny_run[1]), read_metrics(workdir)
    assert [r["step"] for r in rows] == [r["step"] for r in ref_rows] == [10, 20, 30, 40]
    for a, b in zip(ref_rows, rows):
        for key in ("train_loss", "lr", "grad_norm", "val_loss"):
            assert a.get(key) == b.get(key), (a["step"], key)
    assert summary["status"] == "completed"
    assert (summary["val_loss"], summary["train_loss"]) == (summary_ref["val_loss"], summary_ref["train_loss"])
    ckpt = Checkpointer(checkpoint_dir(workdir), save_every=0, read_only=True)
    assert ckpt.steps() == [20, 40] and ckpt.verify(40) is None  # step 40 saved again
    assert (checkpoint_dir(workdir) / "40.corrupt").is_dir()  # the broken one is kept for a human


@pytest.mark.parametrize("corruption", ["8 bytes overwritten in a data file", "empty state/_METADATA"])
def test_evaluate_load_run_and_export_fall_back_while_a_trainer_holds_the_lock(tiny_run, tmp_path, caplog, corruption):
    config, workdir, _ = copy_run(tiny_run, tmp_path, "readers")
    fi.CORRUPTIONS[corruption](checkpoint_dir(workdir) / "40")
    tr = trainer_lib.Trainer(config, workdir, write=False)
    with Checkpointer(checkpoint_dir(workdir), save_every=0, read_only=True) as ckpt:
        want, _ = ckpt.restore(restore_target(tr.abstract, tr.shardings), 20)
    with WorkdirLock(workdir), caplog.at_level(logging.WARNING):  # readers take no lock
        result = evaluate_workdir(str(workdir))
        _, _, params, _ = load_run(workdir)
        exported = hf.export_workdir(workdir, tmp_path / "hf")
    assert result["step"] == 20 and exported["step"] == 20
    assert result["val_loss"] == tr.evaluate(want.params, want.frozen)["val_loss"]
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(want.params)):
        np.testing.assert_array_equal(a, b)
    warnings = skip_warnings(caplog)
    assert len(warnings) >= 3 and all(str(checkpoint_dir(workdir) / "40") in w for w in warnings)
    assert (checkpoint_dir(workdir) / "40").is_dir()  # readers leave it where it is


# --- fault injection (reduced) -------------------------------------------------------------------------


def test_fault_injection_kills_inside_checkpoint_writes_lose_no_data(tiny_run, tmp_path, tfds_cache):
    """Two SIGKILLs (one while a checkpoint is being written, one at a random time), resumed each time:
    the metrics and summary equal the uninterrupted in-process run bit for bit."""
    config, reference, _ = tiny_run
    overrides = {
        "train.num_steps": str(config.train.num_steps),
        "train.steps_per_call": str(config.train.steps_per_call),
        "train.log_every": str(config.train.log_every),
        "train.eval_every": str(config.train.eval_every),
        "train.eval_batches": str(config.train.eval_batches),
        "checkpoint.every": str(config.checkpoint.every),
        "sample.num_tokens": "0",
        "data.tfds_dir": str(tfds_cache),
    }
    result = fi.kill_and_resume(
        reference, tmp_path / "killed", overrides, kills=2, seed=3, wall=8.0, startup=6.0, slow_commit=0.5
    )
    figures = fi.report(result, [])
    assert figures["data_lost"] == 0, figures["problems"]
    assert figures["kills"] >= 1 and figures["kills_inside_checkpoint_write"] >= 1, result["events"]
    assert figures["kills_survived"] == figures["kills"]
    assert not list((tmp_path / "killed" / "checkpoints").glob("*" + fi.TMP_SUFFIX + "*"))
