"""Tokenizers: text <-> int32 ids, saved beside a run as `tokenizer.json` so a resumed run or a
sampler decodes with exactly the vocabulary the model was trained on.

A new kind (e.g. BPE) plugs in with one class that has `from_train_text` / `from_json` and one
line in `TOKENIZERS`.
"""
from __future__ import annotations

import json
import os
import pathlib
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

TOKENIZER_FILE = "tokenizer.json"


@runtime_checkable
class Tokenizer(Protocol):
    @property
    def name(self) -> str: ...  # the registry kind, e.g. 'char'

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> np.ndarray: ...  # int32, 1-D

    def decode(self, ids: Any) -> str: ...

    def save(self, directory: str | os.PathLike) -> None: ...  # writes tokenizer.json


class TokenizerClass(Protocol):
    """What the registry needs from a tokenizer class."""

    def from_train_text(self, text: str) -> Tokenizer: ...

    def from_json(self, data: dict[str, Any]) -> Tokenizer: ...


def _ids_1d(ids: Any, vocab_size: int) -> np.ndarray:
    ids_N = np.asarray(ids)
    if ids_N.ndim > 1:
        raise ValueError(f"decode expects a 1-D sequence of ids, got shape {ids_N.shape}.")
    ids_N = ids_N.reshape(-1).astype(np.int64)
    if ids_N.size and (ids_N.min() < 0 or ids_N.max() >= vocab_size):
        raise ValueError(f"token ids must be in [0, {vocab_size}), got [{ids_N.min()}, {ids_N.max()}].")
    return ids_N


def _write_json(directory: str | os.PathLike, data: dict[str, Any]) -> None:
    path = pathlib.Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    (path / TOKENIZER_FILE).write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")


class CharTokenizer:
    """One id per distinct character of the TRAIN split, sorted by code point (like nanoGPT)."""

    name: ClassVar[str] = "char"

    def __init__(self, chars: str):
        if not chars or len(set(chars)) != len(chars) or list(chars) != sorted(chars):
            raise ValueError("CharTokenizer vocabulary must be non-empty, distinct, sorted characters.")
        self.chars = chars
        # Code points sorted ascending: encode is a vectorised searchsorted, decode a gather.
        self._codes_V = np.array([ord(c) for c in chars], dtype=np.uint32)

    @classmethod
    def from_train_text(cls, text: str) -> CharTokenizer:
        return cls("".join(sorted(set(text))))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CharTokenizer:
        return cls(data["chars"])

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        codes_N = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
        pos_N = np.minimum(np.searchsorted(self._codes_V, codes_N), self.vocab_size - 1)
        unknown_N = self._codes_V[pos_N] != codes_N
        if unknown_N.any():
            i = int(unknown_N.argmax())
            raise ValueError(
                f"Character {chr(codes_N[i])!r} (U+{int(codes_N[i]):04X}, at position {i}) is not in "
                f"the char tokenizer's vocabulary of {self.vocab_size}, which was built from the "
                "train split; use the byte tokenizer for open-vocabulary text."
            )
        return pos_N.astype(np.int32)

    def decode(self, ids: Any) -> str:
        ids_N = _ids_1d(ids, self.vocab_size)
        return self._codes_V[ids_N].astype("<u4").tobytes().decode("utf-32-le")

    def save(self, directory: str | os.PathLike) -> None:
        _write_json(directory, {"kind": self.name, "chars": self.chars})


class ByteTokenizer:
    """UTF-8 bytes as ids (vocab 256): any text, any language, no unknown tokens."""

    name: ClassVar[str] = "byte"
    vocab_size: ClassVar[int] = 256

    @classmethod
    def from_train_text(cls, text: str) -> ByteTokenizer:
        return cls()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ByteTokenizer:
        return cls()

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int32)

    def decode(self, ids: Any) -> str:
        # 'replace': sampled ids may cut a multi-byte character; valid UTF-8 round-trips exactly.
        return _ids_1d(ids, 256).astype(np.uint8).tobytes().decode("utf-8", errors="replace")

    def save(self, directory: str | os.PathLike) -> None:
        _write_json(directory, {"kind": self.name})


# kind -> class. The BPE tokenizer adds one line here.
TOKENIZERS: dict[str, TokenizerClass] = {
    CharTokenizer.name: CharTokenizer,
    ByteTokenizer.name: ByteTokenizer,
}


def _lookup(kind: str) -> TokenizerClass:
    if kind not in TOKENIZERS:
        raise ValueError(f"Unknown tokenizer kind {kind!r}; known kinds: {', '.join(sorted(TOKENIZERS))}.")
    return TOKENIZERS[kind]


def build_tokenizer(kind: str, train_text: str) -> Tokenizer:
    """A fresh tokenizer of `kind`, fitted (if it learns anything) on the train split only."""
    return _lookup(kind).from_train_text(train_text)


def load_tokenizer(directory: str | os.PathLike) -> Tokenizer:
    """The tokenizer a run saved with `save(directory)`."""
    path = pathlib.Path(directory) / TOKENIZER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"No {TOKENIZER_FILE} at {path}: save one with tokenizer.save(directory).")
    data = json.loads(path.read_text(encoding="utf-8"))
    kind = data.get("kind")
    if kind not in TOKENIZERS:
        raise ValueError(
            f"{path} has tokenizer kind {kind!r}; known kinds: {', '.join(sorted(TOKENIZERS))}."
        )
    return TOKENIZERS[kind].from_json(data)
