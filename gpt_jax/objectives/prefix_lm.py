"""Prefix LM (T5's prefix-LM objective; UniLM's seq-to-seq mask): per row a prefix length p uniform
in [1, L-1]; the inputs' first p tokens attend to each other both ways (prefix_len = p), later ones
causally. inputs/targets are shifted as in causal LM.

Which predictions count: input position t predicts targets[t] = w[t+1]. For t < p-1 that token is
itself an input inside the prefix, which position t can see (bidirectional), so predicting it would
be copying: weight 0. Position p-1 sees exactly w[0..p-1] and predicts w[p], the first token after
the prefix; positions t >= p are causal. So weights = [t >= p-1]: the loss covers w[p..L], L-p+1 tokens.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from gpt_jax.objectives.causal import check_windows, shift
from gpt_jax.objectives.loss import WeightedCrossEntropy


@dataclasses.dataclass(frozen=True)
class PrefixLM(WeightedCrossEntropy):
    base_vocab: int
    name: ClassVar[str] = "prefix_lm"
    plain_windows: ClassVar[bool] = False  # batches are the corpus windows as they are
    left_to_right: ClassVar[bool] = True  # the model it trains can sample text token by token
    extra_tokens: ClassVar[int] = 0

    @property
    def sentinels(self) -> dict[str, int]:
        return {}

    def make_batch(self, windows_KxBxW, rng: np.random.Generator) -> dict[str, np.ndarray]:
        w_KxBxW = check_windows(windows_KxBxW, 3, self.name)  # L >= 2: p in [1, L-1] is non-empty
        k, b, width = w_KxBxW.shape
        length = width - 1
        p_KxB = rng.integers(1, length, size=(k, b))  # [1, L-1]
        batch = shift(w_KxBxW)
        batch["weights"] = (np.arange(length) >= p_KxB[..., None] - 1).astype(np.float32)
        batch["prefix_len"] = p_KxB.astype(np.int32)
        return batch
