"""Next-token prediction: inputs = w[:-1], targets = w[1:], every position counted."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from gpt_jax.objectives.loss import WeightedCrossEntropy


def check_windows(windows_KxBxW, min_width: int, name: str) -> np.ndarray:
    """windows as int32 [K, B, W] (W = L+1), or a one-line error."""
    w = np.asarray(windows_KxBxW)
    if w.ndim != 3 or not np.issubdtype(w.dtype, np.integer):
        raise ValueError(f"objective {name!r} expects integer token windows [K, B, L+1], got {w.dtype}{list(w.shape)}")
    if w.shape[-1] < min_width:
        raise ValueError(
            f"objective {name!r} needs windows of at least {min_width} tokens (block_size >= {min_width - 1}), "
            f"got {w.shape[-1]}; raise model.block_size"
        )
    return w.astype(np.int32, copy=False)


def shift(w_KxBxW: np.ndarray) -> dict[str, np.ndarray]:
    """inputs/targets as the two overlapping views of each row, weights 1."""
    return {
        "inputs": np.ascontiguousarray(w_KxBxW[..., :-1]),
        "targets": np.ascontiguousarray(w_KxBxW[..., 1:]),
        "weights": np.ones(w_KxBxW[..., 1:].shape, np.float32),
    }


@dataclasses.dataclass(frozen=True)
class Causal(WeightedCrossEntropy):
    base_vocab: int
    name: ClassVar[str] = "causal"
    plain_windows: ClassVar[bool] = True  # batches are the corpus windows as they are
    left_to_right: ClassVar[bool] = True  # the model it trains can sample text token by token
    extra_tokens: ClassVar[int] = 0

    @property
    def sentinels(self) -> dict[str, int]:
        return {}

    def make_batch(self, windows_KxBxW, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return shift(check_windows(windows_KxBxW, 2, self.name))
