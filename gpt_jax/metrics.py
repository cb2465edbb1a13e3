"""Metric logging: ``<workdir>/metrics.jsonl`` (one JSON object per logged step) and
TensorBoard event files under ``<workdir>/tb`` (tensorboardX; works without TensorFlow).

Only process 0 writes. Callers pass already-fetched python/numpy scalars (one
``jax.device_get`` per logged step in the train loop): a ``jax.Array`` is rejected so that
no hidden device->host sync can sneak in here.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from gpt_jax.paths import Path, as_path, file_size, is_local

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
TB_DIR = "tb"
# ``train_loss`` -> TensorBoard tag ``train/loss`` (groups them in the TB UI).
_TB_GROUPS = ("train_", "val_", "eval_", "test_")


def _to_python(key: str, value: Any) -> Any:
    if isinstance(value, jax.Array):
        raise TypeError(
            f"metric {key!r} is a jax.Array; fetch it first (jax.device_get) so the "
            "host sync happens once, in the train loop"
        )
    if isinstance(value, np.ndarray):
        if value.size != 1:
            raise TypeError(f"metric {key!r} is not a scalar (shape {value.shape})")
        value = value.reshape(()).item()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    raise TypeError(f"metric {key!r} has unsupported type {type(value).__name__}")


def _tb_tag(key: str) -> str:
    for prefix in _TB_GROUPS:
        if key.startswith(prefix):
            return prefix[:-1] + "/" + key[len(prefix) :]
    return key


def _parse_lines(path: Path) -> list[dict[str, Any]]:
    records = []
    with path.open("r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                # Typically the last line of a run killed mid-write.
                log.warning("Skipping malformed line %d of %s", lineno, path)
    return records


def read_metrics(workdir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All records of ``<workdir>/metrics.jsonl`` in file order ([] if absent)."""
    path = as_path(workdir) / METRICS_FILE
    return _parse_lines(path) if path.exists() else []


def _tensorboardx_writer():
    """tensorboardX's SummaryWriter without the `import torch` its module runs when torch is installed
    (~2 s per run; scalars need only numpy). A torch the process already imported is left alone."""
    if "torch" in sys.modules:
        from tensorboardX import SummaryWriter

        return SummaryWriter
    sys.modules["torch"] = None  # makes `import torch` raise ImportError, which tensorboardX handles
    try:
        from tensorboardX import SummaryWriter
    finally:
        del sys.modules["torch"]
    return SummaryWriter


class MetricWriter:
    """Appends one JSON line per ``write`` and mirrors numeric values to TensorBoard.

    ``resume_step``: the step of the checkpoint a resumed run restored. Records with
    ``step > resume_step`` (logged after that checkpoint by the dead run) are dropped so the
    file has no duplicate or phantom steps, and TensorBoard hides its events from
    ``resume_step + 1`` on (``purge_step``). ``None`` means a fresh run: a non-empty
    ``metrics.jsonl`` left by an earlier run is moved to ``metrics.jsonl.old`` and old TB
    events are hidden.
    """

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        *,
        resume_step: int | None = None,
        tensorboard: bool = True,
    ) -> None:
        self.workdir = as_path(workdir)
        self.path = self.workdir / METRICS_FILE
        self._active = jax.process_index() == 0
        self._file = None
        self._tb = None
        if not self._active:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            if self.path.exists() and file_size(self.path) > 0:
                self.path.replace(self.path.with_name(METRICS_FILE + ".old"))
        else:
            self._truncate_after(int(resume_step))
        if is_local(self.path):
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - open for the run, closed by close()
        else:  # an object store cannot append: rewrite it, whole; the object appears when the run closes it
            kept = _parse_lines(self.path) if self.path.exists() else []
            self._file = self.path.open("w", encoding="utf-8")  # noqa: SIM115 - open for the run, closed by close()
            self._file.writelines(json.dumps(r) + "\n" for r in kept)
        if tensorboard:
            SummaryWriter = _tensorboardx_writer()

            tb_dir = self.workdir / TB_DIR
            had_events = tb_dir.is_dir() and any(tb_dir.glob("events.out.tfevents.*"))
            purge_step = int(resume_step) + 1 if resume_step is not None else (0 if had_events else None)
            self._tb = SummaryWriter(str(tb_dir), purge_step=purge_step)

    def _truncate_after(self, step: int) -> None:
        if not self.path.exists():
            return
        # Rewritten even if nothing is dropped: that also removes a partial last line.
        kept = [r for r in _parse_lines(self.path) if int(r.get("step", -1)) <= step]
        tmp = self.path.with_name(METRICS_FILE + ".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)
        tmp.replace(self.path)  # atomic: a crash here leaves the old or the new file

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Log ``metrics`` (python/numpy scalars; ``None`` values are dropped) at ``step``."""
        if not self._active:
            return
        record: dict[str, Any] = {"step": int(step)}
        for key, value in metrics.items():
            value = _to_python(key, value)
            if value is not None:
                record[key] = value
        assert self._file is not None
        # NaN/inf are written as bare NaN/Infinity (Python's json reads them back).
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()  # a crash loses at most the line being written
        if self._tb is not None:
            for key, value in record.items():
                if key == "step" or isinstance(value, (bool, str)):
                    continue
                self._tb.add_scalar(_tb_tag(key), value, int(step))

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> MetricWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
