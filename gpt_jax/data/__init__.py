"""Data layer: text splits -> tokenizer -> token arrays -> step-addressed batches."""

from __future__ import annotations

import os

import numpy as np

from gpt_jax.data.batches import TokenBatcher, eval_batches
from gpt_jax.data.labelled import LABELLED, encode_labelled, known_labelled, load_labelled
from gpt_jax.data.sft import SFT_FILES, conversations, load_sft, pack, read_jsonl, render, to_conversation, unpacked
from gpt_jax.data.sources import known_datasets, load_text_splits, resolve_manual_dir, resolve_tfds_dir
from gpt_jax.data.tokenizers import Tokenizer, build_tokenizer, load_tokenizer

__all__ = [
    "LABELLED",
    "SFT_FILES",
    "Tokenizer",
    "TokenBatcher",
    "build_tokenizer",
    "conversations",
    "encode_labelled",
    "eval_batches",
    "known_datasets",
    "known_labelled",
    "load_labelled",
    "load_sft",
    "load_text_splits",
    "load_tokenizer",
    "pack",
    "prepare_tokens",
    "read_jsonl",
    "render",
    "resolve_manual_dir",
    "resolve_tfds_dir",
    "to_conversation",
    "unpacked",
]


def prepare_tokens(
    dataset: str,
    tokenizer_kind: str,
    *,
    manual_dir: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    tokenizer: Tokenizer | None = None,
    vocab_size: int | None = None,
    tokenizer_path: str | os.PathLike | None = None,
) -> tuple[Tokenizer, dict[str, np.ndarray]]:
    """(tokenizer, {'train': int32[N_train], 'validation': int32[N_val]}).

    Pass `tokenizer` (e.g. `load_tokenizer(workdir)` on resume) to reuse its vocabulary;
    otherwise a new one of `tokenizer_kind` is loaded from `tokenizer_path` or built from the
    train split only (`vocab_size` ids, for bpe/sentencepiece).
    Not cached: tokenizing tiny_shakespeare takes ~10 ms (char) to ~1 s (bpe).
    """
    splits = load_text_splits(dataset, manual_dir=manual_dir, data_dir=data_dir)
    if tokenizer is None:
        tokenizer = build_tokenizer(tokenizer_kind, splits["train"], vocab_size=vocab_size, path=tokenizer_path)
    elif tokenizer.name != tokenizer_kind:
        raise ValueError(
            f"Given tokenizer is {tokenizer.name!r} but tokenizer_kind is {tokenizer_kind!r}; "
            "a resumed run must keep the tokenizer it was trained with."
        )
    return tokenizer, {split: tokenizer.encode(text) for split, text in splits.items()}
