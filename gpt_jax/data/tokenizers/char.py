"""The char tokenizer: one id per distinct character of the train split."""

from __future__ import annotations

import os
from typing import Any, ClassVar

import numpy as np

from gpt_jax.data.tokenizers.base import _fixed_vocab, _ids_1d, _write_json


class CharTokenizer:
    """One id per distinct character of the TRAIN split, sorted by code point (like nanoGPT)."""

    name: ClassVar[str] = "char"

    def __init__(self, chars: str):
        if not chars or len(set(chars)) != len(chars) or list(chars) != sorted(chars):
            raise ValueError("CharTokenizer vocabulary must be non-empty, distinct, sorted characters.")
        self.chars = chars
        # Code points sorted ascending: encode is a vectorised searchsorted, decode a gather.
        self._codes_V = np.array([ord(c) for c in chars], dtype=np.uint32)

    eos_id: ClassVar[None] = None

    @classmethod
    def from_train_text(cls, text: str, *, vocab_size: int | None = None) -> CharTokenizer:
        _fixed_vocab(cls.name, vocab_size)
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
