"""One trainer per workdir: an exclusive lock on ``<workdir>/.lock``, held for the whole run.

A second ``python -m gpt_jax.main`` on a workdir in use would resume from the first one's live
checkpoints and interleave two runs in ``metrics.jsonl``; it is refused at once instead, with one line
naming the holder (host, pid, start time) and the fix. Readers (sample, evaluate, export, chat) take no
lock. In a multi-process run only process 0 takes it (the caller passes ``enabled``).

Why ``fcntl.flock`` and not ``O_CREAT|O_EXCL`` + a pid file: the kernel drops a flock when its holder
dies, however it dies (SIGKILL, OOM, a crashed host's NFS lease expiring), so a stale lock can never
block a restart and there is no "is pid P on host H still alive?" guess to get wrong (pids are reused;
another host's pids cannot be checked at all) and no remove-and-recreate takeover race. The JSON in the
file ({host, pid, started}) only names the holder in the error message; a file whose lock is free is
stale by definition and simply taken over. The file is unlinked on release *while still locked*, and a
taker checks that the path still names the inode it locked (else it retries), so unlinking cannot let
two processes hold "the" lock. flock is honoured across hosts on local disks and NFSv4 (Linux maps it
to a POSIX lock); a filesystem without locking gets a logged warning and no lock rather than no training.
A gs:// (or s3://, az://) workdir has no file locks at all: it is not locked, with a logged warning;
one trainer per bucket workdir is then the user's to ensure.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import logging
import os
import socket

from gpt_jax.paths import as_path, is_local

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"


class WorkdirLockedError(RuntimeError):
    """Another live process holds the workdir's lock."""


def _describe(holder: dict) -> str:
    if not holder:
        return "another process (it has not written its host/pid yet)"
    return f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, started {holder.get('started', '?')}"


def _read_holder(fd: int) -> dict:
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
        holder = json.loads(text) if text.strip() else {}
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}


class WorkdirLock:
    """``with WorkdirLock(workdir): ...`` -- raises :class:`WorkdirLockedError` if another process holds it.

    ``enabled=False`` (a multi-process run's other processes) makes it a no-op. Not re-entrant: a second
    ``WorkdirLock`` on the same workdir in the same process is refused too (flock is per open file).
    """

    def __init__(self, workdir: str | os.PathLike[str], *, enabled: bool = True) -> None:
        self.workdir = as_path(workdir)
        self.path = self.workdir / LOCK_FILE
        self.enabled = enabled and is_local(self.workdir)  # gs:// etc.: no POSIX locks there
        if enabled and not self.enabled:
            log.warning("workdir %s is not on a local filesystem: not locked; run one trainer on it at a time", workdir)
        self._fd: int | None = None
        self._created_dir = False

    def acquire(self) -> WorkdirLock:
        if not self.enabled or self._fd is not None:
            return self
        self._created_dir = not self.workdir.exists()
        self.workdir.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                self._remove_created_dir()
                raise WorkdirLockedError(
                    f"workdir {self.workdir} is in use by another trainer ({_describe(holder)}; lock file "
                    f"{self.path}); wait for it to finish or stop it, or pass a different --workdir"
                ) from None
            except OSError as e:
                os.close(fd)
                if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
                log.warning(
                    "cannot lock %s (%s): this filesystem has no file locks; not guarding the workdir", self.path, e
                )
                return self
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the previous holder unlinked it between our open and flock: lock the new file
        stale = _read_holder(fd)
        if stale:
            log.info("took over the lock of a trainer that is gone (%s) in %s", _describe(stale), self.workdir)
        record = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # while still locked: see the module docstring
        os.close(self._fd)  # drops the flock
        self._fd = None
        self._remove_created_dir()

    def _remove_created_dir(self) -> None:
        """A workdir this lock created and nothing else wrote to (e.g. a config error) is removed again."""
        if self._created_dir:
            with contextlib.suppress(OSError):
                self.workdir.rmdir()  # only if empty

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> WorkdirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
