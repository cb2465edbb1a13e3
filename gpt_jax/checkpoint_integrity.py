"""Integrity records of checkpoints: the size and sha256 of every file of a step, checked on restore.

Why: Orbax 0.12.8 checksums nothing it writes except zarr3's shard *index* (crc32c); the OCDBT data
files, ``state/_METADATA`` and the JSON items are unchecked, so a truncated file fails with a bare
``Exception``/``JSONDecodeError`` naming no file, and 8 overwritten bytes inside a data file restore
silently as different numbers.

``<step>/integrity.json`` = ``{"version": 1, "algorithm": "sha256", "files": {relpath: [size, hex]}}``.
It is part of Orbax's atomic commit: :class:`IntegrityTemporaryPath` (passed to Orbax as its
``temporary_path_class``) writes it inside ``<step>.orbax-checkpoint-tmp`` once every item is written and
finalized, just before Orbax writes ``commit_success.txt`` and renames the directory to ``<step>``. So
every committed step written since this exists has its record (no window for a kill between commit and
record), sync and async saves alike (async: on Orbax's background thread; multi-process: on the primary
host, after every host's writes). A committed step without a record predates this and is accepted as
legacy, unverified. Not recorded: Orbax's ``_CHECKPOINT_METADATA`` (rewritten with the commit time after
this runs; restore does not need it -- an empty or garbled one restores fine) and ``commit_success.txt``.
The record is plain sha256, so ``sha256sum`` can check a step by hand.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
from collections.abc import Callable

import orbax.checkpoint as ocp
from etils import epath

from gpt_jax.paths import Path, as_path, file_size, is_local, write_text_atomic

RECORD_FILE = "integrity.json"
_ALGORITHM = "sha256"
# Top-level files of a step dir that are written after the record or are the record itself.
_UNRECORDED = frozenset({"_CHECKPOINT_METADATA", "commit_success.txt", RECORD_FILE})


def _files(step_dir: Path) -> list[str]:
    out = []
    for root, _, names in epath.Path(step_dir).walk():  # pathlib has no walk() before Python 3.12
        for name in names:
            rel = (root / name).relative_to(step_dir).as_posix()
            if rel not in _UNRECORDED:
                out.append(rel)
    return sorted(out)


def _digest(path: Path, algorithm: str = _ALGORITHM) -> str:
    h = hashlib.new(algorithm)
    with as_path(path).open("rb") as f:
        while chunk := f.read(1 << 20):  # (hashlib.file_digest needs Python 3.11)
            h.update(chunk)
    return h.hexdigest()


def write_record(step_dir: str | os.PathLike[str]) -> None:
    """Hash every file under ``step_dir`` into ``step_dir/integrity.json`` (written via a temp file + rename)."""
    step_dir = as_path(step_dir)
    files = {rel: [file_size(step_dir / rel), _digest(step_dir / rel)] for rel in _files(step_dir)}
    record = {"version": 1, "algorithm": _ALGORITHM, "files": files}
    write_text_atomic(step_dir / RECORD_FILE, json.dumps(record, indent=1, sort_keys=True))


def has_record(step_dir: str | os.PathLike[str]) -> bool:
    return (as_path(step_dir) / RECORD_FILE).exists()


def verify(step_dir: str | os.PathLike[str]) -> str | None:
    """None if every file the record lists has its recorded size and hash (or there is no record: legacy);
    else one line saying what does not match. Files the record does not list are not read."""
    step_dir = as_path(step_dir)
    record_path = step_dir / RECORD_FILE
    if not record_path.exists():
        return None
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        files = {str(rel): (int(size), str(digest)) for rel, (size, digest) in record["files"].items()}
        algorithm = record.get("algorithm", _ALGORITHM)
        hashlib.new(algorithm)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        return f"its {RECORD_FILE} is unreadable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    # Sizes first: a truncated or missing file is found without reading anything.
    for rel, (size, _) in sorted(files.items()):
        path = step_dir / rel
        if not path.is_file():
            return f"{rel} is missing"
        if file_size(path) != size:
            return f"{rel} is {file_size(path)} bytes, the integrity record says {size}"
    for rel, (_, want) in sorted(files.items()):
        if _digest(step_dir / rel, algorithm) != want:
            return f"{rel} does not match its {algorithm} in the integrity record (changed after it was written)"
    return None


class IntegrityTemporaryPath(ocp.path.atomicity.AtomicRenameTemporaryPath):
    """Orbax's atomic-rename commit, with the integrity record written into the step dir just before it.

    Orbax also finalizes each item (``state/``, ``meta/``) through this class; only the step directory
    (a numeric name) gets a record. ``temporary_path_class`` is marked deprecated in Orbax 0.12.8 in favour
    of ``atomicity_options``, which can only choose between Orbax's own classes; re-check on upgrade.
    """

    async def finalize(self) -> None:
        if self.get_final().name.isdigit():
            await asyncio.to_thread(write_record, as_path(self.get()))
        await super().finalize()


class IntegrityCommitFilePath(ocp.path.atomicity.CommitFileTemporaryPath):
    """The same record for a bucket (gs://), where Orbax writes a step in place and its commit file marks
    it complete (object stores have no atomic directory rename)."""

    async def finalize(self) -> None:
        if self.get_final().name.isdigit():
            await asyncio.to_thread(write_record, as_path(self.get()))
        await super().finalize()


def temporary_path_class(directory) -> type:
    """The Orbax commit for a checkpoint directory: atomic rename locally; a commit file in a bucket."""
    return IntegrityTemporaryPath if is_local(directory) else IntegrityCommitFilePath


@dataclasses.dataclass
class KeepLatestAndLastGood:
    """Orbax preservation policy: the newest ``n`` steps (what ``max_to_keep`` does) plus the newest step
    known good (restored by us, or saved by us and committed), so that garbage collection can never leave
    only unconfirmed steps -- e.g. with ``keep=1``, an async save in flight or a step a caller is about to
    quarantine. With ``keep=1`` and async saves that means two steps on disk between saves."""

    n: int
    newest_good: Callable[[], int | None]

    def should_preserve(self, checkpoints, *, context) -> list[bool]:
        good, first_kept = self.newest_good(), len(checkpoints) - self.n
        return [i >= first_kept or c.step == good for i, c in enumerate(checkpoints)]
