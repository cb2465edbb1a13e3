"""Acceptance: a run on the grain pipeline, stopped mid-epoch (SIGTERM -> checkpoint) and restarted, sees
exactly the batches an uninterrupted run sees, and ends with the same losses."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import signal

import numpy as np
import pytest

from gpt_jax import run_config
from gpt_jax.data import grain_pipeline
from gpt_jax.trainer import train_and_evaluate

REPO = pathlib.Path(__file__).resolve().parents[1]
STEPS, STOP_AT = 8, 4
REAL_BATCHES = grain_pipeline.PackedStream.batches


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> pathlib.Path:
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta"]
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n\n".join(" ".join(rng.choice(words, rng.integers(3, 60))) for _ in range(400)))
    return path


def _config(corpus, tmp):
    c = run_config.load_config(str(REPO / "configs" / "tiny.py"))
    c.data.pipeline, c.data.tokenizer, c.data.dataset = "grain", "byte", f"file:{corpus}"
    c.data.tfds_dir = str(tmp / "tfds")
    c.data.shards_dir = str(tmp / "shards")
    c.model.n_layer = 1
    c.train.num_steps, c.train.steps_per_call, c.train.log_every = STEPS, 2, 2
    c.train.eval_every, c.train.eval_batches = 0, 1
    c.checkpoint.every = 100  # only the preemption save and the final one
    c.sample.num_tokens = 0
    return c


def _recorder(monkeypatch, seen: list, stop_at: int | None = None):
    """Record a hash of every train step's batch; SIGTERM ourselves while fetching `stop_at - 2`."""

    def batches(self, step, k, **kw):
        out = REAL_BATCHES(self, step, k, **kw)
        if k > 1:  # not the trainer's one-step shape probe
            for i in range(k):
                digest = hashlib.sha1(b"".join(np.ascontiguousarray(v[i]).tobytes() for v in out.values()))
                seen.append((step + i, digest.hexdigest()))
        if stop_at is not None and step + k == stop_at:
            os.kill(os.getpid(), signal.SIGTERM)  # the loop saves after this chunk and stops
        return out

    monkeypatch.setattr(grain_pipeline.PackedStream, "batches", batches)


def _find(state: dict, key: str) -> dict:
    while key not in state:
        state = state["parent"]
    return state


def test_resumed_run_sees_the_uninterrupted_batches(corpus, tmp_path, monkeypatch):
    config = _config(corpus, tmp_path)
    full: list = []
    _recorder(monkeypatch, full)
    whole = train_and_evaluate(config, tmp_path / "whole")

    parts: list = []
    _recorder(monkeypatch, parts, stop_at=STOP_AT)
    first = train_and_evaluate(config, tmp_path / "resumed")
    assert (first["status"], first["step"]) == ("preempted", STOP_AT)
    state = json.loads(
        next((tmp_path / "resumed" / "checkpoints" / str(STOP_AT) / "data").glob("process_0-*.json")).read_text()
    )
    assert state["step"] == STOP_AT
    records = json.loads(next((tmp_path / "shards").glob("*/meta.json")).read_text())["splits"]["train"]["records"]
    rows = STOP_AT * config.train.batch_size
    packing = _find(state["iterator"], "counter")  # grain's packing iterator state
    assert packing["counter"] == rows < records  # packed rows emitted so far: mid-epoch
    assert packing["next_row"] > 0  # and mid-way through a packed group of rows

    _recorder(monkeypatch, parts)
    second = train_and_evaluate(config, tmp_path / "resumed")
    assert second["status"] == "completed"
    assert [s for s, _ in parts] == list(range(STEPS))
    assert parts == full
    assert len({h for _, h in full}) == STEPS  # every step a different batch
    np.testing.assert_allclose(second["train_loss"], whole["train_loss"], rtol=1e-6)
    np.testing.assert_allclose(second["val_loss"], whole["val_loss"], rtol=1e-6)
