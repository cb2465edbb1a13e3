"""Early stopping on a validation metric, the best state kept apart from the latest checkpoints."""

from __future__ import annotations

import pathlib

import ml_collections

from gpt_jax.checkpoint import Checkpointer, restore_target


class EarlyStopping:
    """Best-so-far on `task.early_stop_metric` (a `val_*` key; loss: lower is better, else higher), the best
    state kept in <workdir>/best apart from the latest checkpoints, and a stop after `patience` evals
    without improvement. Stateless across restarts: the best value and step live in best/'s metadata."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: pathlib.Path):
        task = config.get("task") or {}
        self.metric, self.patience = task.get("early_stop_metric"), int(task.get("patience") or 0)
        self.eval_every = config.train.eval_every
        self.ckpt = Checkpointer(workdir / "best", save_every=0, keep=1, async_save=False) if self.metric else None
        self.best, self.best_step = None, None
        if self.ckpt and self.ckpt.latest_step() is not None:
            self.best_step = self.ckpt.latest_step()
            self.best = float(self.ckpt.read_meta(self.best_step)["value"])

    def better(self, value: float) -> bool:
        if self.best is None:
            return True
        return value < self.best if "loss" in self.metric else value > self.best

    def update(self, step: int, record: dict, state) -> bool:
        """Record an eval; True when training should stop."""
        if not self.metric:
            return False
        if self.metric not in record:
            raise ValueError(
                f"task.early_stop_metric={self.metric!r} is not an eval metric; this task reports {sorted(record)}"
            )
        if self.better(record[self.metric]):
            self.best, self.best_step = float(record[self.metric]), step
            self.ckpt.maybe_save(step, state, {"step": step, "metric": self.metric, "value": self.best}, force=True)
            self.ckpt.wait()
        evals_since = (step - self.best_step) // max(self.eval_every, 1)
        return self.patience > 0 and evals_since >= self.patience

    def best_state(self, abstract, shardings):
        if not self.ckpt or self.best_step is None:
            return None
        return self.ckpt.restore(restore_target(abstract, shardings), self.best_step)[0]

    def close(self):
        if self.ckpt:
            self.ckpt.close()
