"""Preemption: SIGTERM/SIGINT only flip a flag; the train loop polls it, saves and exits."""

from __future__ import annotations

import signal
from typing import Any

import jax
from jax.experimental import multihost_utils


class PreemptionFlag:
    """Set by SIGTERM; the train loop polls it, saves with ``force=True``, waits, exits.

    Single process: :meth:`reached` is just :meth:`is_set`. Multi-process (after
    ``jax.distributed.initialize``): no Python handler is installed -- it would replace
    JAX's own SIGTERM notifier -- and :meth:`reached` asks JAX's preemption sync manager,
    which makes every host agree on the same save step. It must then be called at
    *every* step on every host.
    """

    def __init__(self) -> None:
        self._set = False
        self._prev_handler: Any = None
        self._signum: int | None = None

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set

    def reached(self, step: int) -> bool:
        if jax.process_count() > 1:
            return bool(multihost_utils.reached_preemption_sync_point(int(step)))
        return self._set

    def uninstall(self) -> None:
        """Put back the previous handler (tests; nested runs)."""
        if self._signum is not None:
            signal.signal(self._signum, self._prev_handler)
            self._signum = None


def install_sigterm_handler(signum: int = signal.SIGTERM) -> PreemptionFlag:
    """Install a handler that only flips a flag (no I/O, locks or JAX in signal context).

    Must be called from the main thread. See :class:`PreemptionFlag` for multi-process.
    """
    flag = PreemptionFlag()
    if jax.process_count() > 1:
        return flag

    def _handler(_signum: int, _frame: object) -> None:
        flag._set = True  # a plain attribute store: safe at any bytecode boundary

    flag._prev_handler = signal.signal(signum, _handler)
    flag._signum = signum
    return flag
