"""Masked LM (BERT, Devlin et al. 2018) on a decoder: fully bidirectional attention (prefix_len = L).

Inputs are the window's first L tokens. In each row round(mask_rate * L) positions (at least 1: like
BERT's create_pretraining_data, an exact count, not a coin per token) are chosen uniformly; each
chosen position independently becomes the MASK sentinel (id base_vocab) with probability 0.8, a
uniform random token of the base vocabulary with 0.1, or stays as it is with 0.1. Targets sit at
the SAME position (not shifted) and are the original tokens; weights are 1 at chosen positions only.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from gpt_jax.objectives.causal import check_windows
from gpt_jax.objectives.loss import WeightedCrossEntropy


@dataclasses.dataclass(frozen=True)
class MLM(WeightedCrossEntropy):
    base_vocab: int
    mask_rate: float = 0.15
    mask_token_rate: float = 0.8  # of the chosen: -> MASK
    random_token_rate: float = 0.1  # of the chosen: -> random token; the rest keep their token
    name: ClassVar[str] = "mlm"
    plain_windows: ClassVar[bool] = False  # batches are the corpus windows as they are
    left_to_right: ClassVar[bool] = False  # the model it trains can sample text token by token
    extra_tokens: ClassVar[int] = 1

    def __post_init__(self):
        if not 0.0 < self.mask_rate <= 1.0:
            raise ValueError(f"mlm mask_rate={self.mask_rate} must be in (0, 1]")
        if min(self.mask_token_rate, self.random_token_rate) < 0 or self.mask_token_rate + self.random_token_rate > 1:
            raise ValueError("mlm mask_token_rate and random_token_rate must be >= 0 and sum to <= 1")

    @property
    def sentinels(self) -> dict[str, int]:
        return {"MASK": self.base_vocab}

    def make_batch(self, windows_KxBxW, rng: np.random.Generator) -> dict[str, np.ndarray]:
        w_KxBxW = check_windows(windows_KxBxW, 2, self.name)
        x_KxBxL = np.ascontiguousarray(w_KxBxW[..., :-1])
        k, b, length = x_KxBxL.shape
        n = max(1, round(self.mask_rate * length))
        # n positions per row: the n smallest of L uniform keys (argpartition, no full sort).
        chosen_KxBxN = np.argpartition(rng.random((k, b, length)), n - 1, axis=-1)[..., :n]
        u_KxBxN = rng.random((k, b, n))
        random_KxBxN = rng.integers(0, self.base_vocab, (k, b, n), dtype=np.int32)
        kept_KxBxN = np.take_along_axis(x_KxBxL, chosen_KxBxN, -1)
        new_KxBxN = np.where(
            u_KxBxN < self.mask_token_rate,
            np.int32(self.base_vocab),
            np.where(u_KxBxN < self.mask_token_rate + self.random_token_rate, random_KxBxN, kept_KxBxN),
        )
        inputs_KxBxL = x_KxBxL.copy()
        np.put_along_axis(inputs_KxBxL, chosen_KxBxN, new_KxBxN, -1)
        weights_KxBxL = np.zeros((k, b, length), np.float32)
        np.put_along_axis(weights_KxBxL, chosen_KxBxN, 1.0, -1)
        return {
            "inputs": inputs_KxBxL,
            "targets": x_KxBxL,
            "weights": weights_KxBxL,
            "prefix_len": np.full((k, b), length, np.int32),  # every token sees every token
        }
