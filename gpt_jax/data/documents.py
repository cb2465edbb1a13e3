"""Documents streamed one at a time (never a whole split in memory), for the shard writer.

`dataset` names (as `data.dataset`):
  - 'tfds:<name>[/<config>][:<version>]': a TFDS dataset, example by example. A split prepared as
    array_record is read without TensorFlow (`tfds.data_source`); otherwise `tfds.load` (needs TF).
  - 'file:<path>': a large local corpus, read in 1 MiB chunks: `.jsonl[.gz]` = one document per line
    (its `text_feature` field), anything else = plain text with documents separated by blank (or whitespace-only) lines.
    Every VALIDATION_EVERY-th document is the validation split.
  - a local corpus of `text_builder.CORPORA` (e.g. 'tiny_shakespeare'): its prepared split's records.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import pathlib
import re
from collections.abc import Iterator

import gpt_jax.data.sources as sources

FILE_PREFIX = "file:"
VALIDATION_EVERY = 100  # file corpora: documents 99, 199, ... are the validation split
READ_CHARS = 1 << 20  # text read per chunk
MAX_DOC_CHARS = 1 << 20  # a blank-line-free stretch longer than this is cut into documents of this size


def stream_documents(
    dataset: str,
    split: str,
    *,
    manual_dir: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    text_feature: str = "text",
) -> Iterator[str]:
    """The documents of `split` ('train' | 'validation') of `dataset`, one string at a time."""
    if split not in sources.SPLITS:
        raise ValueError(f"split must be one of {sources.SPLITS}, got {split!r}")
    if dataset.startswith(FILE_PREFIX):
        path = _file_path(dataset)
        for i, doc in enumerate(_file_documents(path, text_feature)):
            if (i % VALIDATION_EVERY == VALIDATION_EVERY - 1) == (split == "validation"):
                yield doc
        return
    if dataset.startswith(sources.TFDS_PREFIX):
        name = dataset[len(sources.TFDS_PREFIX) :]
        yield from sources.stream_tfds_text(name, split, sources.resolve_tfds_dir(data_dir), text_feature)
        return
    builder = sources.local_builder(dataset, manual_dir=manual_dir, data_dir=data_dir)
    source = builder.as_data_source(split=split)
    for i in range(len(source)):  # records are in `index` order: the corpus' chunks in sequence
        yield _as_str(source[i]["text"])


def source_id(dataset: str, *, manual_dir=None, data_dir=None) -> str:
    """What identifies the documents' content (for the shard cache key): a file's path, size and mtime; a
    local corpus's md5; a TFDS dataset's name and data dir."""
    if dataset.startswith(FILE_PREFIX):
        path = _file_path(dataset)
        st = path.stat()
        return f"file:{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    if dataset.startswith(sources.TFDS_PREFIX):
        return f"{dataset}@{sources.resolve_tfds_dir(data_dir).resolve()}"
    manual = sources.resolve_manual_dir(manual_dir, dataset=dataset)
    return f"{dataset}:{sources.text_builder.file_md5(manual / sources.text_builder.CORPORA[dataset].relative_path)}"


def sample_text(dataset: str, num_chars: int, **kwargs) -> str:
    """The first `num_chars` characters of the train documents (newline-joined): what a tokenizer is
    learned from when the corpus is too large to hold."""
    parts, total = [], 0
    for doc in stream_documents(dataset, "train", **kwargs):
        parts.append(doc[: num_chars - total])
        total += len(parts[-1]) + 1
        if total >= num_chars:
            break
    return "\n".join(parts)


def short_hash(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode("utf-8")).hexdigest()[:16]


def _file_path(dataset: str) -> pathlib.Path:
    path = pathlib.Path(dataset[len(FILE_PREFIX) :]).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"data.dataset={dataset!r}: no file at {path}; give 'file:<path to a .txt or .jsonl>'.")
    return path


def _open_text(path: pathlib.Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _file_documents(path: pathlib.Path, text_feature: str) -> Iterator[str]:
    name = path.name[:-3] if path.suffix == ".gz" else path.name
    with _open_text(path) as f:
        if name.endswith(".jsonl"):
            for n, line in enumerate(f, 1):
                if line.strip():
                    row = json.loads(line)
                    if text_feature not in row:
                        raise ValueError(f"{path} line {n} has no {text_feature!r} field; set the text feature.")
                    yield str(row[text_feature])
            return
        yield from _paragraphs(f)


_BLANK_LINE = re.compile(r"\n[ \t]*\n")


def _paragraphs(f: io.TextIOBase) -> Iterator[str]:
    """Blank-line-separated documents of a text file, read READ_CHARS at a time."""
    buffer = ""
    while chunk := f.read(READ_CHARS):
        buffer += chunk
        *docs, buffer = _BLANK_LINE.split(buffer)
        yield from (d for d in docs if d.strip())
        while len(buffer) > MAX_DOC_CHARS:
            yield buffer[:MAX_DOC_CHARS]
            buffer = buffer[MAX_DOC_CHARS:]
    if buffer.strip():
        yield buffer


def _as_str(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
