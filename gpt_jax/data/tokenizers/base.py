"""What every tokenizer is (the `Tokenizer` protocol) and the helpers the kinds share.

A run saves its tokenizer as `tokenizer.json` ({"kind": ..., ...}) beside the checkpoints, so a
resumed run or a sampler decodes with exactly the vocabulary the model was trained on.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Protocol, runtime_checkable

import numpy as np

from gpt_jax.paths import as_path

TOKENIZER_FILE = "tokenizer.json"
# GPT-2's one special token: document separator, and the id generation stops at (50256 in GPT-2).
ENDOFTEXT = "<|endoftext|>"


@runtime_checkable
class Tokenizer(Protocol):
    @property
    def name(self) -> str: ...  # the registry kind, e.g. 'char'

    @property
    def vocab_size(self) -> int: ...  # ids are in [0, vocab_size)

    @property
    def eos_id(self) -> int | None: ...  # end-of-text id (GPT-2: 50256); None for char/byte

    def encode(self, text: str) -> np.ndarray: ...  # int32, 1-D

    def decode(self, ids: Any) -> str: ...

    def save(self, directory: str | os.PathLike) -> None: ...  # writes tokenizer.json


class TokenizerClass(Protocol):
    """What the registry needs from a tokenizer class."""

    def from_train_text(self, text: str, *, vocab_size: int | None = None) -> Tokenizer: ...

    def from_json(self, data: dict[str, Any]) -> Tokenizer: ...


def _ids_1d(ids: Any, vocab_size: int) -> np.ndarray:
    ids_N = np.asarray(ids)
    if ids_N.ndim > 1:
        raise ValueError(f"decode expects a 1-D sequence of ids, got shape {ids_N.shape}.")
    ids_N = ids_N.reshape(-1).astype(np.int64)
    if ids_N.size and (ids_N.min() < 0 or ids_N.max() >= vocab_size):
        raise ValueError(f"token ids must be in [0, {vocab_size}), got [{ids_N.min()}, {ids_N.max()}].")
    return ids_N


def _write_json(directory: str | os.PathLike, data: dict[str, Any], indent: int | None = 1) -> None:
    path = as_path(directory)
    path.mkdir(parents=True, exist_ok=True)
    (path / TOKENIZER_FILE).write_text(json.dumps(data, ensure_ascii=False, indent=indent), encoding="utf-8")


def _fixed_vocab(kind: str, vocab_size: int | None) -> None:
    if vocab_size is not None:
        raise ValueError(
            f"data.vocab_size={vocab_size} is for learned vocabularies (bpe, sentencepiece); the {kind} "
            "tokenizer fixes its own; leave data.vocab_size unset."
        )


def _read_json_file(path: pathlib.Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        problem = f"{path} is not valid UTF-8 JSON ({e}); it may be truncated or not a tokenizer file."
        raise ValueError(problem) from None
