"""The word tokenizer: one id per word or punctuation mark of a fixed vocabulary (the VQA templates').

Ids 0, 1, 2 are `<pad>`, `<image>` (an image placeholder, gpt_jax.models.vlm) and `<eos>` (ends an answer).
Text is lower-cased; words, numbers and each of `?.,!` are tokens; decode joins words with spaces.
"""

from __future__ import annotations

import os
import re
from typing import Any, ClassVar

import numpy as np

from gpt_jax.data.tokenizers.base import _fixed_vocab, _ids_1d, _write_json

SPECIALS = ("<pad>", "<image>", "<eos>")
_TOKEN = re.compile(r"<image>|<eos>|<pad>|[a-z0-9']+|[?.,!:]|\S")


def split_words(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


class WordTokenizer:
    name: ClassVar[str] = "word"
    eos_id: ClassVar[int] = 2
    pad_id: ClassVar[int] = 0
    image_id: ClassVar[int] = 1

    def __init__(self, words: list[str]):
        if tuple(words[: len(SPECIALS)]) != SPECIALS or len(set(words)) != len(words):
            raise ValueError(f"WordTokenizer vocabulary must start with {SPECIALS} and hold distinct words.")
        self.words = list(words)
        self._ids = {w: i for i, w in enumerate(words)}

    @classmethod
    def from_train_text(cls, text: str, *, vocab_size: int | None = None) -> WordTokenizer:
        _fixed_vocab(cls.name, vocab_size)
        return cls(list(SPECIALS) + sorted(set(split_words(text)) - set(SPECIALS)))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WordTokenizer:
        return cls(data["words"])

    @property
    def vocab_size(self) -> int:
        return len(self.words)

    def encode(self, text: str) -> np.ndarray:
        words = split_words(text)
        unknown = [w for w in words if w not in self._ids]
        if unknown:
            raise ValueError(
                f"word {unknown[0]!r} is not in the word tokenizer's vocabulary of {self.vocab_size} "
                f"(the run's question templates); rephrase with known words, e.g. {' '.join(self.words[3:13])}"
            )
        return np.array([self._ids[w] for w in words], np.int32)

    def decode(self, ids: Any) -> str:
        return " ".join(self.words[i] for i in _ids_1d(ids, self.vocab_size)).replace(" ?", "?")

    def save(self, directory: str | os.PathLike) -> None:
        _write_json(directory, {"kind": self.name, "words": self.words})
