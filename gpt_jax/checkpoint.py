"""Checkpointing: a thin wrapper over Orbax's CheckpointManager (the SIGTERM flag: gpt_jax.preemption).

Layout: ``<workdir>/checkpoints/<step>/{state,meta,commit_success.txt,...}``.

Orbax 0.12.8 facts this module relies on (checked against the installed source):

* Atomicity (local filesystems): a step is written to ``<step>.orbax-checkpoint-tmp``,
  ``commit_success.txt`` is written inside it, and the directory is then *renamed* to
  ``<step>``. A killed process therefore leaves at most a ``*.orbax-checkpoint-tmp``
  directory; previous steps are never touched. (On GCS Orbax writes in place and the
  commit file alone marks completion.) We treat a step as complete only if its final
  directory exists AND holds ``commit_success.txt`` -- that covers both modes.
* Async: ``save`` blocks only for the device->host copy (so donating the state buffers to
  the next train step right after is safe); serialisation, commit and old-step deletion
  run on a background thread. ``CheckpointManager.latest_step()`` already counts an
  in-flight save, which is why :meth:`Checkpointer.latest_step` reads the disk instead.
* New-style typed PRNG keys (``jax.random.key``) and optax NamedTuple states save and
  restore natively with ``StandardSave``/``StandardRestore`` -- no ``key_data`` wrapping.

Integrity (:mod:`gpt_jax.checkpoint_integrity`): each step's ``integrity.json`` (size + sha256 of every
file) is part of Orbax's commit and checked on restore. :meth:`Checkpointer.restore_latest_good` (trainer,
sample, evaluate, export) takes the newest step that verifies and reads, naming each one it skips. Broken
steps are never deleted: a trainer moves them to ``<step>.corrupt``, and garbage collection always keeps
the newest step known good.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from gpt_jax import checkpoint_integrity as integrity
from gpt_jax.paths import Path, absolute, as_path

log = logging.getLogger(__name__)

PyTree = Any

# Written by Orbax into a step directory as the last act of a save (both atomicity modes).
_COMMIT_FILE = "commit_success.txt"
_REASON_FILE = "QUARANTINED.txt"  # why a trainer moved a step dir aside


class CheckpointCorruptError(ValueError):
    """A checkpoint failed its integrity check or could not be read; ``problem`` says how."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"checkpoint {path} is unusable: {problem}")
        self.path, self.problem = path, problem


class NoReadableCheckpointError(FileNotFoundError):
    """A checkpoint directory holds no complete checkpoint that verifies and reads."""


def checkpoint_dir(workdir: str | os.PathLike[str]) -> Path:
    """The conventional checkpoint directory of a run: ``<workdir>/checkpoints``."""
    return as_path(workdir) / "checkpoints"


def abstract_like(tree: PyTree) -> PyTree:
    """``jax.ShapeDtypeStruct`` tree (keeping each array's sharding) for :meth:`Checkpointer.restore`."""

    def one(x: Any) -> Any:
        if hasattr(x, "shape") and hasattr(x, "dtype"):
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))
        return x  # non-array leaf (e.g. a python scalar): Orbax restores it as saved

    return jax.tree.map(one, tree)


def restore_target(abstract: PyTree, shardings: PyTree) -> PyTree:
    """The tree :meth:`Checkpointer.restore` reads onto: ``abstract``'s shapes/dtypes placed per ``shardings``."""
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)


class Checkpointer:
    """Periodic, atomic, optionally asynchronous checkpoints of a pytree + JSON metadata.

    ``directory`` is the directory holding the step directories (use
    ``checkpoint_dir(workdir)``). ``save_every <= 0`` disables periodic saves (only
    ``force=True`` saves). ``read_only=True`` is for readers (sampling/eval) that share
    the directory with a live trainer: it never deletes, moves or writes anything.

    For a caller that judges a saved state itself (e.g. a non-finite guard): don't call
    :meth:`maybe_save` for a state you distrust, and :meth:`quarantine` a step found bad after
    the fact; until a newer save commits, garbage collection keeps the newest step known good.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        save_every: int,
        keep: int = 3,
        async_save: bool = True,
        read_only: bool = False,
    ) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.directory = absolute(directory)
        self.save_every = int(save_every)
        self.read_only = read_only
        self._good: set[int] = set()  # restored by us, or saved by us and committed
        self._saving: set[int] = set()  # saved by us, not yet seen committed
        options = ocp.CheckpointManagerOptions(
            preservation_policy=integrity.KeepLatestAndLastGood(keep, self._newest_good),
            enable_async_checkpointing=async_save,
            # Writes integrity.json into each step as part of the commit (checkpoint_integrity).
            temporary_path_class=integrity.temporary_path_class(self.directory),  # rename, or commit file on gs://
            # Leftover ``*.orbax-checkpoint-tmp`` dirs from a killed run are deleted on start
            # (primary host only). Never for a reader: it would delete a live trainer's
            # in-flight save.
            cleanup_tmp_directories=not read_only,
            read_only=read_only,
            create=not read_only,
        )
        self._mgr = ocp.CheckpointManager(self.directory, options=options)

    # ------------------------------------------------------------------ saving
    def maybe_save(
        self, step: int, state: PyTree, meta: dict[str, Any], *, force: bool = False, items: dict | None = None
    ) -> bool:
        """Save ``state`` + ``meta`` (+ extra Composite ``items``: gpt_jax.data.iterator_state) if ``step`` is
        on the save interval or ``force``.

        Returns True if a save was started. A step that is already saved (or being saved)
        is skipped, so a periodic save and a preemption save at the same step don't clash.
        With ``async_save`` this returns once arrays are copied to host; call :meth:`wait`
        before relying on the files (e.g. before exiting).
        """
        if self.read_only:
            raise RuntimeError("maybe_save on a read_only Checkpointer")
        step = int(step)
        if not force and (self.save_every <= 0 or step % self.save_every != 0):
            return False
        if step in self._mgr.all_steps():  # includes in-flight async saves
            return False
        # force=True: our interval check above is the only save policy (Orbax's own
        # should_save would also refuse steps <= its latest one).
        self._saving.add(step)
        return bool(
            self._mgr.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state),
                    meta=ocp.args.JsonSave(dict(meta)),
                    **(items or {}),
                ),
                force=True,
            )
        )

    def wait(self) -> None:
        """Block until every pending async save is committed (and old steps pruned)."""
        self._mgr.wait_until_finished()

    def _newest_good(self) -> int | None:
        """Newest step known good: restored by us, or saved by us and committed. Asked by the
        preservation policy inside Orbax's ``save`` (after it waited for the previous save)."""
        for step in list(self._saving):
            if (self.directory / str(step) / _COMMIT_FILE).is_file():
                self._saving.discard(step)
                self._good.add(step)
        return max(self._good, default=None)

    def quarantine(self, step: int, reason: str, *, tag: str = "corrupt") -> Path | None:
        """Move ``<step>`` aside to ``<step>.<tag>[.N]`` with ``reason`` in its QUARANTINED.txt; kept for a
        human, out of Orbax's view (never restored, garbage-collected or counted in ``keep``; the step can
        be saved again). Returns the new path (None on a non-primary process)."""
        if self.read_only:
            raise RuntimeError("quarantine on a read_only Checkpointer")
        self.wait()  # the step may be an in-flight save
        step, moved = int(step), None
        if jax.process_index() == 0:
            src = self.directory / str(step)
            moved, n = self.directory / f"{step}.{tag}", 1
            while moved.exists():
                moved, n = self.directory / f"{step}.{tag}.{n}", n + 1
            src.rename(moved)
            (moved / _REASON_FILE).write_text(reason + "\n")
            log.warning("moved checkpoint %s aside to %s (%s); it is kept, not deleted", src, moved.name, reason)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"gpt_jax_quarantine_{step}")
        self._good.discard(step)
        self._saving.discard(step)
        self._mgr.reload()
        return moved

    def close(self) -> None:
        """Wait for pending saves and release Orbax's resources."""
        self._mgr.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- reading
    def steps(self) -> list[int]:
        """Steps with a complete (committed) checkpoint on disk, ascending."""
        if not self.directory.is_dir():
            return []
        steps = []
        for p in self.directory.iterdir():
            if not p.name.isdigit() or not p.is_dir():
                continue  # tmp dirs (``<step>.orbax-checkpoint-tmp``) and stray files
            if (p / _COMMIT_FILE).is_file():
                steps.append(int(p.name))
            else:
                log.warning("Ignoring uncommitted checkpoint directory %s", p)
        return sorted(steps)

    def latest_step(self) -> int | None:
        """Latest complete checkpoint on disk (never an in-flight or half-written one)."""
        steps = self.steps()
        return steps[-1] if steps else None

    def read_meta(self, step: int) -> dict[str, Any]:
        """The JSON metadata saved with ``step`` (no arrays are read, nothing verified)."""
        try:
            out = self._mgr.restore(int(step), args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        except Exception as e:  # Orbax/JSON raise bare Exception/ValueError for bad files
            raise CheckpointCorruptError(self.directory / str(step), _one_line(e)) from e
        return dict(out["meta"])

    def verify(self, step: int) -> str | None:
        """None if step ``step``'s files match its integrity record (or it has none: legacy); else what
        does not match, in one line. Reads every file of the step."""
        return integrity.verify(self.directory / str(int(step)))

    def latest_good_step(self) -> int | None:
        """The newest complete step whose files verify (naming each newer one that does not); reads no
        arrays, so a legacy (record-less) step that fails to read is left for :meth:`restore` to report."""
        for step in reversed(self.steps()):
            problem = self.verify(step)
            if problem is None:
                return step
            log.warning("skipping checkpoint %s: %s", self.directory / str(step), problem)
        return None

    def restore_latest_good(
        self, abstract_state: PyTree, items: dict | None = None
    ) -> tuple[PyTree, dict[str, Any], int]:
        """``(state, meta, step)`` from the newest checkpoint that verifies and reads.

        Each newer one that fails is named in a one-line warning; a writable Checkpointer (the trainer,
        which holds the workdir lock) then moves those aside with :meth:`quarantine` so the run can save
        their steps again. Raises :class:`NoReadableCheckpointError` (one line, naming the directory)
        when there is no complete checkpoint or none is usable -- nothing is moved in that case.
        """
        steps = self.steps()
        if not steps:
            raise NoReadableCheckpointError(f"no complete checkpoint in {self.directory}; train the run first")
        bad: list[CheckpointCorruptError] = []
        for step in reversed(steps):
            try:
                state, meta = self.restore(abstract_state, step, items)
            except CheckpointCorruptError as e:
                log.warning("skipping checkpoint %s: %s", e.path, e.problem)
                bad.append(e)
                continue
            if bad:
                log.warning("using checkpoint %s, the newest usable one", self.directory / str(step))
                if not self.read_only:
                    for e in bad:
                        self.quarantine(int(e.path.name), e.problem)
            return state, meta, step
        listed = "; ".join(f"{e.path.name}: {e.problem}" for e in bad)
        raise NoReadableCheckpointError(
            f"no readable checkpoint in {self.directory} ({listed}); move the broken step dirs out of it "
            "to start over, or use another --workdir"
        )

    def restore(self, abstract_state: PyTree, step: int | None = None, items: dict | None = None) -> tuple:
        """Restore ``(state, meta)`` from ``step`` (default: latest complete one).

        ``abstract_state`` mirrors the saved tree with ``jax.ShapeDtypeStruct`` leaves
        carrying the *target* sharding (``abstract_like`` makes one from live arrays);
        arrays are read straight onto that mesh, whatever mesh they were saved from.
        """
        if step is None:
            step = self.latest_step()
            if step is None:
                raise NoReadableCheckpointError(f"no complete checkpoint in {self.directory}; train the run first")
        step, path = int(step), self.directory / str(int(step))
        abstract_state = abstract_like(abstract_state)
        missing = [
            jax.tree_util.keystr(kp)
            for kp, leaf in jax.tree_util.tree_leaves_with_path(abstract_state)
            if isinstance(leaf, jax.ShapeDtypeStruct) and leaf.sharding is None
        ]
        if missing:
            # Orbax would silently fall back to a single device; make the caller choose.
            raise ValueError(f"abstract_state leaves without a sharding: {missing[:5]}")
        if not path.is_dir():
            raise NoReadableCheckpointError(f"no checkpoint {path}; the complete ones are steps {self.steps()}")
        if not (path / _COMMIT_FILE).is_file():
            raise CheckpointCorruptError(path, f"it is not a complete checkpoint (no {_COMMIT_FILE})")
        problem = integrity.verify(path)
        if problem is not None:
            raise CheckpointCorruptError(path, problem)
        try:
            state, meta = self._restore(abstract_state, step, items or {})
        except Exception as e:  # tensorstore raises a bare Exception for a truncated file
            raise CheckpointCorruptError(path, f"it could not be read ({_one_line(e)})") from e
        self._good.add(step)
        return state, meta

    def _restore(self, abstract_state: PyTree, step: int, items: dict) -> tuple[PyTree, dict[str, Any]]:
        try:
            out = self._mgr.restore(
                int(step),
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state),
                    meta=ocp.args.JsonRestore(),
                    **items,
                ),
            )
        except ValueError as e:
            legacy = _without_empty_frozen(abstract_state)
            if legacy is None or "frozen" not in str(e):
                raise
            # Written before TrainState had `frozen` (always empty for pretraining): restore the rest.
            out = self._mgr.restore(
                int(step),
                args=ocp.args.Composite(state=ocp.args.StandardRestore(legacy), meta=ocp.args.JsonRestore()),
            )
            out = {"state": abstract_state.replace(**out["state"], frozen={}), "meta": out["meta"]}
        return out["state"], dict(out["meta"])


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:300]}" if text else type(e).__name__


def _without_empty_frozen(state: PyTree) -> dict | None:
    """A TrainState with an empty `frozen` as the dict of its other fields; None for anything else."""
    if not (dataclasses.is_dataclass(state) and getattr(state, "frozen", None) == {}):
        return None
    return {f.name: getattr(state, f.name) for f in dataclasses.fields(state) if f.name != "frozen"}
