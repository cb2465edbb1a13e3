"""Host side of the non-finite guard: `train.on_nonfinite=stop|skip`.

The step reports `finite` per optimizer step (gpt_jax.train.make_step). The loop hands each call's flags
here without waiting for them; they are read when the host syncs anyway (a log or eval), before every
checkpoint save, and one call late otherwise, so the device never waits on the host for them. A stopped
run saves nothing after its last finite checkpoint, so `checkpoint.keep` can never prune that one away.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np

MODES = ("stop", "skip")


class NonFiniteError(ValueError):
    """A run stopped on a non-finite loss or gradient norm (gpt_jax.main exits 3)."""


class NonFiniteGuard:
    """Collects per-step `finite` flags; `check()` raises NonFiniteError when the run must stop.

    stop: the first non-finite step stops the run. skip: such steps left the state unchanged (the step
    did it); the run stops once more than `max_skips` were skipped in all (counted across restarts).
    """

    def __init__(self, mode: str, max_skips: int, skipped: int = 0, last_good: Callable[[], str | None] = lambda: None):
        if mode not in MODES:
            raise ValueError(f"train.on_nonfinite={mode!r} is not one of {MODES}")
        self.mode, self.max_skips, self.skipped = mode, int(max_skips), int(skipped)
        self.last_good = last_good  # -> the last finite checkpoint, for the error line
        self._pending: list[tuple[int, jax.Array]] = []  # (first step of the call, flags [k])

    def add(self, first_step: int, finite_K: jax.Array) -> None:
        self._pending.append((first_step, finite_K))

    def check(self, keep_last: int = 0) -> None:
        """Read the pending flags (all but the newest `keep_last` calls, which may still be running)."""
        ready = self._pending[: len(self._pending) - keep_last]
        self._pending = self._pending[len(ready) :]
        for first_step, flags in ready:
            bad = np.flatnonzero(~np.asarray(jax.device_get(flags), dtype=bool))
            if not bad.size:
                continue
            step = first_step + int(bad[0]) + 1  # steps are counted after they are taken
            if self.mode == "stop":
                self._pending = []
                raise NonFiniteError(self._message(f"non-finite loss or gradient norm at step {step}"))
            self.skipped += int(bad.size)
            if self.skipped > self.max_skips:
                self._pending = []
                raise NonFiniteError(
                    self._message(
                        f"{self.skipped} non-finite steps skipped (last at step {first_step + int(bad[-1]) + 1}), "
                        f"over train.max_nonfinite_skips={self.max_skips}"
                    )
                )

    def check_value(self, name: str, value: float, step: int) -> None:
        """An eval metric that is not finite stops the run in either mode (nothing to skip)."""
        if not np.isfinite(value):
            raise NonFiniteError(self._message(f"{name}={value} at step {step}"))

    def _message(self, what: str) -> str:
        good = self.last_good() or "none (no checkpoint was saved before it)"
        return (
            f"{what}; stopped without saving; last good checkpoint: {good}; lower optim.lr, "
            "raise optim.warmup_steps or set train.on_nonfinite=skip"
        )
