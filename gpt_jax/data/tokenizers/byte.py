"""The byte tokenizer: UTF-8 bytes as ids (vocab 256)."""

from __future__ import annotations

import os
from typing import Any, ClassVar

import numpy as np

from gpt_jax.data.tokenizers.base import _fixed_vocab, _ids_1d, _write_json


class ByteTokenizer:
    """UTF-8 bytes as ids (vocab 256): any text, any language, no unknown tokens."""

    name: ClassVar[str] = "byte"
    vocab_size: ClassVar[int] = 256
    eos_id: ClassVar[None] = None

    @classmethod
    def from_train_text(cls, text: str, *, vocab_size: int | None = None) -> ByteTokenizer:
        _fixed_vocab(cls.name, vocab_size)
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
