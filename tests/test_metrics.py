"""Tests for gpt_jax.metrics (metrics.jsonl + TensorBoard event files)."""

import json
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from gpt_jax import metrics as metrics_lib
from gpt_jax.metrics import MetricWriter, read_metrics


def read_tb_events(tb_dir) -> list:
    """Parse TFRecord-framed Event protos (u64 len, u32 crc, data, u32 crc) without TF."""
    events = []
    for path in sorted(tb_dir.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            events.append(event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length]))
            pos += 12 + length + 4
    return events


def read_tb_scalars(tb_dir) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for event in read_tb_events(tb_dir):
        for v in event.summary.value:
            out.setdefault(v.tag, []).append((event.step, v.simple_value))
    return out


def test_jsonl_content_and_types(tmp_path):
    with MetricWriter(tmp_path) as w:
        w.write(0, {"train_loss": np.float32(4.5), "lr": 0.0, "grad_norm": np.array(1.25)})
        w.write(
            100,
            {
                "train_loss": 2.0,
                "val_loss": np.float64(2.25),
                "lr": 1e-3,
                "tokens_per_sec": np.int64(12345),
                "mfu": 0.31,
                "skipped": None,
            },
        )
        # Readable while the writer is still open (each line is flushed).
        assert [r["step"] for r in read_metrics(tmp_path)] == [0, 100]
    recs = read_metrics(tmp_path)
    assert recs == [
        {"step": 0, "train_loss": 4.5, "lr": 0.0, "grad_norm": 1.25},
        {"step": 100, "train_loss": 2.0, "val_loss": 2.25, "lr": 1e-3, "tokens_per_sec": 12345, "mfu": 0.31},
    ]
    assert type(recs[0]["train_loss"]) is float and type(recs[1]["tokens_per_sec"]) is int
    for line in (tmp_path / "metrics.jsonl").read_text().splitlines():
        json.loads(line)  # one JSON object per line
    assert read_metrics(tmp_path / "nowhere") == []


def test_rejects_device_arrays(tmp_path):
    with MetricWriter(tmp_path, tensorboard=False) as w:
        with pytest.raises(TypeError, match="device_get"):
            w.write(1, {"train_loss": jnp.float32(1.0)})
        with pytest.raises(TypeError, match="scalar"):
            w.write(1, {"train_loss": np.zeros(3)})
        w.write(2, jax.device_get({"train_loss": jnp.float32(1.0)}))  # the intended pattern
    assert read_metrics(tmp_path) == [{"step": 2, "train_loss": 1.0}]


def test_resume_truncates_phantom_steps(tmp_path):
    with MetricWriter(tmp_path) as w:
        for step in range(0, 60, 10):
            w.write(step, {"train_loss": 10.0 - step / 10})
    # The dead run was killed mid-line after its last checkpoint (step 30).
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 60, "train_lo')
    with MetricWriter(tmp_path, resume_step=30) as w:
        assert [r["step"] for r in read_metrics(tmp_path)] == [0, 10, 20, 30]
        for step in (40, 50):
            w.write(step, {"train_loss": -1.0})
    recs = read_metrics(tmp_path)
    assert [r["step"] for r in recs] == [0, 10, 20, 30, 40, 50]
    assert recs[3]["train_loss"] == 7.0 and recs[4]["train_loss"] == -1.0
    # TensorBoard hides the dead run's steps > 30: a SessionLog START at step 31 (purge_step).
    starts = [e.step for e in read_tb_events(tmp_path / "tb") if e.session_log.status == e.session_log.START]
    assert starts == [31]


def test_fresh_run_moves_old_file_aside(tmp_path):
    with MetricWriter(tmp_path, tensorboard=False) as w:
        w.write(5, {"train_loss": 1.0})
    with MetricWriter(tmp_path, tensorboard=False) as w:
        w.write(0, {"train_loss": 3.0})
    assert read_metrics(tmp_path) == [{"step": 0, "train_loss": 3.0}]
    assert (tmp_path / "metrics.jsonl.old").read_text().startswith('{"step": 5')


def test_tensorboard_event_file(tmp_path):
    with MetricWriter(tmp_path) as w:
        w.write(
            10,
            {
                "train_loss": 3.5,
                "val_loss": 3.75,
                "lr": 0.5,
                "grad_norm": 2.0,
                "tokens_per_sec": 1000.0,
                "mfu": 0.25,
                "note": "text is jsonl-only",
            },
        )
        w.write(20, {"train_loss": 3.0, "lr": 0.25})
        w.flush()
    events = list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0
    scalars = read_tb_scalars(tmp_path / "tb")
    assert scalars["train/loss"] == [(10, 3.5), (20, 3.0)]
    assert scalars["val/loss"] == [(10, 3.75)]
    assert scalars["lr"] == [(10, 0.5), (20, 0.25)]
    assert {"grad_norm", "tokens_per_sec", "mfu"} <= scalars.keys()
    assert "note" not in scalars


def test_only_process_zero_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(metrics_lib.jax, "process_index", lambda: 1)
    with MetricWriter(tmp_path / "run") as w:
        w.write(1, {"train_loss": 1.0})
        w.flush()
    assert not (tmp_path / "run").exists()
