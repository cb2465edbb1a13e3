"""Pre-tokenized ArrayRecord shards: documents -> token records on disk, written once, streamed by grain.

Layout of a prepared corpus (one directory per dataset x tokenizer, see `prepare_shards`):
  <root>/<key>/meta.json                       {"format", "dtype", "vocab_size", "eos_id", splits: {...}}
  <root>/<key>/<split>/shard-00000.array_record   one record = one document's ids (little-endian `dtype`),
                                                 then the end-of-text id if the tokenizer has one
A document longer than `max_record_tokens` is cut into consecutive records (the end-of-text id only
after its last). The directory is written
under a temporary name and renamed when complete, so a killed writer never leaves a corpus that looks done.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import tempfile
from collections.abc import Iterable
from typing import Any

import numpy as np
from array_record.python.array_record_module import ArrayRecordWriter

FORMAT = "gpt_jax.token_shards.v1"
META_FILE = "meta.json"
RECORDS_PER_SHARD = 50_000
MAX_RECORD_TOKENS = 8192


@dataclasses.dataclass(frozen=True)
class ShardMeta:
    directory: pathlib.Path
    dtype: str  # "uint16" | "uint32"
    vocab_size: int
    eos_id: int | None
    max_record_tokens: int
    splits: dict[str, dict[str, Any]]  # split -> {"shards": [names], "records": n, "tokens": n}

    def paths(self, split: str) -> list[str]:
        if split not in self.splits:
            raise ValueError(f"{self.directory} has no {split!r} split (it has {sorted(self.splits)}).")
        return [str(self.directory / split / name) for name in self.splits[split]["shards"]]


def token_dtype(vocab_size: int) -> str:
    return "uint16" if vocab_size <= 1 << 16 else "uint32"


def decode_record(record: bytes, dtype: str) -> np.ndarray:
    """One record's ids as int32[n]."""
    return np.frombuffer(record, dtype=np.dtype(dtype).newbyteorder("<")).astype(np.int32)


def write_split(
    token_docs: Iterable[np.ndarray],
    directory: str | os.PathLike,
    *,
    dtype: str,
    eos_id: int | None = None,
    records_per_shard: int = RECORDS_PER_SHARD,
    max_record_tokens: int = MAX_RECORD_TOKENS,
) -> dict[str, Any]:
    """Write documents' ids (1-D integer arrays, streamed; `eos_id` appended to each) as records;
    {"shards", "records", "tokens"}."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    np_dtype = np.dtype(dtype).newbyteorder("<")
    limit = np.iinfo(np_dtype).max
    shards, writer, in_shard, records, tokens = [], None, 0, 0, 0
    try:
        for ids in token_docs:
            ids = np.asarray(ids) if eos_id is None else np.append(np.asarray(ids), eos_id)
            if ids.size and (ids.min() < 0 or ids.max() > limit):
                raise ValueError(f"token ids outside [0, {limit}] do not fit the shards' {dtype}")
            for start in range(0, ids.size, max_record_tokens):
                if writer is None or in_shard == records_per_shard:
                    if writer is not None:
                        writer.close()
                    shards.append(f"shard-{len(shards):05d}.array_record")
                    # group_size:1 = every record its own chunk: cheap random access for a global shuffle
                    writer, in_shard = ArrayRecordWriter(str(directory / shards[-1]), "group_size:1"), 0
                piece = ids[start : start + max_record_tokens].astype(np_dtype)
                writer.write(piece.tobytes())
                in_shard, records, tokens = in_shard + 1, records + 1, tokens + piece.size
    finally:
        if writer is not None:
            writer.close()
    return {"shards": shards, "records": records, "tokens": tokens}


def read_meta(directory: str | os.PathLike) -> ShardMeta | None:
    """The corpus in `directory`, or None if it is not a complete one."""
    path = pathlib.Path(directory) / META_FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("format") != FORMAT:
        return None
    return ShardMeta(
        pathlib.Path(directory),
        data["dtype"],
        data["vocab_size"],
        data["eos_id"],
        data["max_record_tokens"],
        data["splits"],
    )


def prepare_shards(
    directory: str | os.PathLike,
    split_docs: dict[str, Iterable[np.ndarray]],
    *,
    vocab_size: int,
    eos_id: int | None,
    records_per_shard: int = RECORDS_PER_SHARD,
    max_record_tokens: int = MAX_RECORD_TOKENS,
) -> ShardMeta:
    """The corpus at `directory`: reused if complete, else written from `split_docs` (split -> streamed
    ids) into a temporary sibling that is renamed into place once every split and meta.json are done."""
    directory = pathlib.Path(directory)
    meta = read_meta(directory)
    if meta is not None:
        return meta
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=directory.name + ".tmp-", dir=directory.parent))
    try:
        dtype = token_dtype(vocab_size)
        splits = {
            split: write_split(
                docs,
                tmp / split,
                dtype=dtype,
                eos_id=eos_id,
                records_per_shard=records_per_shard,
                max_record_tokens=max_record_tokens,
            )
            for split, docs in split_docs.items()
        }
        empty = [s for s, info in splits.items() if info["records"] == 0]
        if empty:
            raise ValueError(f"no documents in the {', '.join(empty)} split(s) of the corpus for {directory}")
        data = {
            "format": FORMAT,
            "dtype": dtype,
            "vocab_size": vocab_size,
            "eos_id": eos_id,
            "max_record_tokens": max_record_tokens,
            "splits": splits,
        }
        (tmp / META_FILE).write_text(json.dumps(data, indent=1), encoding="utf-8")
        os.rename(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return read_meta(directory)
