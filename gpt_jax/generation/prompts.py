"""Prompts in, one packed batch out: rows of real tokens, LEFT-padded to a length bucket.

Buckets are powers of two from 16, so prompt lengths within a bucket share one compiled program.
"""

from __future__ import annotations

import numpy as np

from gpt_jax.config import ModelConfig


def prompt_rows(prompt_ids_BxL, prompt_mask_BxL=None) -> list[np.ndarray]:
    """The real tokens of each row (any padding side): a 2-D array (+ mask) or a list of 1-D sequences."""
    if prompt_mask_BxL is not None:
        ids, mask = np.asarray(prompt_ids_BxL), np.asarray(prompt_mask_BxL, bool)
        if ids.ndim != 2 or ids.shape != mask.shape:
            raise ValueError(f"prompt ids {ids.shape} and prompt_mask {mask.shape} must be the same [B, L] shape")
        rows = [r[m] for r, m in zip(ids, mask)]
    elif isinstance(prompt_ids_BxL, (list, tuple)) and not np.isscalar(prompt_ids_BxL[0] if prompt_ids_BxL else 0):
        rows = [np.asarray(r).reshape(-1) for r in prompt_ids_BxL]
    else:
        ids = np.asarray(prompt_ids_BxL)
        if ids.ndim != 2:
            raise ValueError(f"prompt ids must be [B, L] (or a list of rows), got shape {ids.shape}")
        rows = list(ids)
    if not rows:
        raise ValueError("no prompts given; pass a [B, L] array with B >= 1")
    for i, r in enumerate(rows):
        if r.size == 0:
            raise ValueError(f"prompt row {i} is empty; give at least one token (e.g. the encoding of '\\n')")
        if not np.issubdtype(r.dtype, np.integer):
            raise ValueError(f"prompt row {i} has dtype {r.dtype}; token ids must be integers")
    return [r.astype(np.int32) for r in rows]


def bucket(n: int) -> int:
    return max(16, 1 << (n - 1).bit_length())


def check_length(cfg: ModelConfig, longest: int, max_new: int, slide: bool = False) -> None:
    if cfg.pos == "rope" or slide or longest + max_new <= cfg.block_size:
        return
    raise ValueError(
        f"prompt ({longest} tokens) + max_new_tokens ({max_new}) exceeds block_size={cfg.block_size} of this "
        f"{cfg.pos}-position model; lower max_new_tokens to {max(cfg.block_size - longest, 0)}, shorten the prompt, "
        "or pass slide=True (re-encodes the last block_size // 2 tokens when the window is full)"
    )


def pack(cfg: ModelConfig, rows: list[np.ndarray], max_new: int, min_len: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(prompt_BxP left-padded with 0, start_B): P = the bucket (at least min_len), cropped where
    positions end at block_size."""
    lengths = [len(r) for r in rows]
    for i, r in enumerate(rows):
        if r.min() < 0 or r.max() >= cfg.vocab_size:
            raise ValueError(f"prompt row {i} has ids outside [0, {cfg.vocab_size}); encode with the run's tokenizer")
    p = max(bucket(max(lengths)), min_len)
    if cfg.pos != "rope":  # pad slots beyond what any row can use are pure waste
        p = max(max(lengths), min(p, cfg.block_size - max_new))
    prompt_BxP = np.zeros((len(rows), p), np.int32)
    for i, r in enumerate(rows):
        prompt_BxP[i, p - len(r) :] = r
    return prompt_BxP, np.asarray([p - n for n in lengths], np.int32)
