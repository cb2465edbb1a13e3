"""Workdir and data paths: a cloud URI as an `etils.epath.Path`, a local path as a `pathlib.Path`.

pathlib turns `gs://bucket/run` into the local path `gs:/bucket/run`; epath keeps it and reads/writes
through its gs:// (or s3://, az://) backend, the same paths Orbax takes. Local paths stay pathlib's, so
everything local (rglob, stat().st_size, os calls) works as before. Both share the pathlib API the code
uses (/, exists, is_file, read_text, write_text, mkdir, iterdir, glob, open, rename, replace).
What a URI cannot do: `resolve()` (it would make it local), `os.*`/`open()`/`shutil` calls, fcntl locks,
fsync, appends, recursive globs. Code that needs those asks `is_local` first.
"""

from __future__ import annotations

import os
import pathlib

from etils import epath

Path = pathlib.Path | epath.Path
PathLike = str | os.PathLike
URI_PREFIXES = ("gs://", "s3://", "az://", "hf://")


def as_path(path: PathLike) -> Path:
    """A URI as an epath.Path (kept intact); a local path as a pathlib.Path (`~` expanded)."""
    return pathlib.Path(path).expanduser() if is_local(path) else epath.Path(path)


def file_size(path: Path) -> int:
    """Bytes of a file, local or in a bucket (epath's stat calls it `length`)."""
    st = path.stat()
    return st.st_size if hasattr(st, "st_size") else st.length


def is_local(path: PathLike) -> bool:
    """Whether `path` is on the local filesystem (not a gs://, s3://, az:// or hf:// URI)."""
    return not os.fspath(path).startswith(URI_PREFIXES)


def absolute(path: PathLike) -> Path:
    """A local path made absolute (pathlib's `absolute`, no symlink resolution); a URI as it is."""
    p = as_path(path)
    return p.absolute() if is_local(p) else p


def write_text_atomic(path: PathLike, text: str) -> None:
    """Write `text` so a reader never sees half of it: temp file + rename locally; one object write on a
    bucket (object stores replace an object whole)."""
    p = as_path(path)
    if not is_local(p):
        p.write_text(text)
        return
    tmp = p.with_name(p.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, p)
