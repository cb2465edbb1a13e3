"""Random-window LM batches (nanoGPT's `get_batch`) that are a pure function of the step.

The window offsets of step `s` come from `np.random.default_rng([seed, salt, s])`, so
  - a run resumed at step s sees exactly the batches an uninterrupted run would see,
  - batches(0, 10) == batches(0, 5) ++ batches(5, 5),
  - every process draws the same global batch and keeps its own contiguous rows of it.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

# Salts keep the train stream and the fixed eval windows independent under one seed.
TRAIN_SALT = "train"
EVAL_SALT = "eval"


def _salt_int(salt: int | str) -> int:
    # crc32, not hash(): str hashes change between Python processes.
    return zlib.crc32(salt.encode("utf-8")) if isinstance(salt, str) else int(salt)


class TokenBatcher:
    """Windows of `block_size` tokens at random offsets; targets are inputs shifted by one."""

    def __init__(
        self,
        tokens: Any,
        batch_size: int,
        block_size: int,
        seed: int,
        salt: int | str = TRAIN_SALT,
    ):
        tokens_N = np.asarray(tokens)
        if tokens_N.ndim != 1 or not np.issubdtype(tokens_N.dtype, np.integer):
            raise ValueError(f"tokens must be a 1-D integer array, got {tokens_N.dtype}{list(tokens_N.shape)}.")
        if batch_size < 1 or block_size < 1:
            raise ValueError(f"batch_size and block_size must be >= 1, got {batch_size}, {block_size}.")
        if tokens_N.shape[0] < block_size + 1:
            raise ValueError(
                f"Token array of length {tokens_N.shape[0]} is too short for block_size={block_size}: "
                f"need at least block_size + 1 = {block_size + 1} tokens (inputs plus the shifted target)."
            )
        if seed < 0 or _salt_int(salt) < 0:
            raise ValueError(f"seed and salt must be non-negative, got {seed}, {salt}.")
        self.tokens_N = tokens_N
        self.batch_size = batch_size
        self.block_size = block_size
        self.seed = seed
        self.salt = _salt_int(salt)
        # Valid starts are 0 .. N-L-1 (the target window ends at N-1), as torch.randint(N - L).
        self.num_offsets = tokens_N.shape[0] - block_size
        self._span_W = np.arange(block_size + 1)

    def offsets(self, step: int) -> np.ndarray:
        """Window starts of the GLOBAL batch at `step`: int64[batch_size]."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}.")
        rng = np.random.default_rng([self.seed, self.salt, step])
        return rng.integers(0, self.num_offsets, size=self.batch_size)

    def batches(
        self, start_step: int, num_steps: int, *, process_index: int = 0, process_count: int = 1
    ) -> dict[str, np.ndarray]:
        """Steps [start_step, start_step + num_steps): inputs/targets int32[K, B_local, L].

        B_local = batch_size // process_count; this process gets rows
        [process_index * B_local, (process_index + 1) * B_local) of each global batch.
        """
        if process_count < 1 or not 0 <= process_index < process_count:
            raise ValueError(f"process_index {process_index} is not in [0, process_count={process_count}).")
        if self.batch_size % process_count:
            raise ValueError(f"Global batch_size {self.batch_size} is not divisible by process_count {process_count}.")
        if num_steps < 0:
            raise ValueError(f"num_steps must be >= 0, got {num_steps}.")
        b_local = self.batch_size // process_count
        rows = slice(process_index * b_local, (process_index + 1) * b_local)
        start_KxB = np.empty((num_steps, b_local), dtype=np.int64)
        for k in range(num_steps):
            start_KxB[k] = self.offsets(start_step + k)[rows]
        # One gather of L+1 tokens per row; inputs and targets are its two overlapping views.
        window_KxBxW = self.tokens_N[start_KxB[:, :, None] + self._span_W].astype(np.int32)
        return {
            "inputs": np.ascontiguousarray(window_KxBxW[..., :-1]),
            "targets": np.ascontiguousarray(window_KxBxW[..., 1:]),
        }

    def batch(self, step: int, *, process_index: int = 0, process_count: int = 1) -> dict[str, np.ndarray]:
        """One step: inputs/targets int32[B_local, L]."""
        out = self.batches(step, 1, process_index=process_index, process_count=process_count)
        return {key: value[0] for key, value in out.items()}


def eval_batches(
    tokens: Any,
    batch_size: int,
    block_size: int,
    num_batches: int,
    seed: int,
    *,
    process_index: int = 0,
    process_count: int = 1,
) -> dict[str, np.ndarray]:
    """A fixed set of windows for validation loss: the same every eval (and every resume)."""
    batcher = TokenBatcher(tokens, batch_size, block_size, seed, salt=EVAL_SALT)
    return batcher.batches(0, num_batches, process_index=process_index, process_count=process_count)
