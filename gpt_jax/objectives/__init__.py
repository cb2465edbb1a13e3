"""Pretraining objectives: how raw token windows become a train batch (`config.objective`).

  objective = gpt_jax.objectives.get(config.objective, base_vocab=tokenizer.vocab_size)
  model vocab_size >= base_vocab + objective.extra_tokens   # sentinel ids live after the tokenizer's
  batch = objective.make_batch(windows_KxBxW, np.random.default_rng([seed, step]))

windows_KxBxW: int32 [K, B, L+1], each row L+1 consecutive corpus tokens (TokenBatcher's gather).
The batch follows the design contract: inputs/targets int32 [K, B, L], weights float32 [K, B, L]
(loss mask), prefix_len int32 [K, B] where attention is not plain causal (gpt_jax.masks). The loss is
always `objectives.loss.causal_lm_loss` (weighted cross entropy of logits[t] against targets[t]); an objective
only decides what the rows, targets, weights and mask are. Pure numpy, vectorised over [K, B].

  causal     next-token prediction (GPT): inputs = w[:-1], targets = w[1:].
  fim        fill in the middle (Bavarian et al. 2022): half the rows become
             <PRE> prefix <SUF> suffix <MID> middle <EOT>, trained causally on every token.
  mlm        masked LM (BERT): 15% of positions predicted, fully bidirectional attention.
  prefix_lm  prefix LM (T5 / UniLM): a random bidirectional prefix, causal loss on the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from gpt_jax.objectives.causal import Causal
from gpt_jax.objectives.fim import FIM
from gpt_jax.objectives.mlm import MLM
from gpt_jax.objectives.prefix_lm import PrefixLM


class Objective(Protocol):
    name: str
    extra_tokens: int  # sentinel ids base_vocab .. base_vocab + extra_tokens - 1
    plain_windows: bool  # make_batch returns the windows unchanged (no per-step transform needed)
    left_to_right: bool  # the model it trains can sample text left to right (not MLM)

    @property
    def sentinels(self) -> dict[str, int]: ...  # sentinel name -> id

    def make_batch(self, windows_KxBxW: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]: ...

    def loss(self, logits_BxLxV, batch) -> tuple: ...  # (summed loss, count) of a batch make_batch built


OBJECTIVES: dict[str, Callable[..., Objective]] = {
    "causal": Causal,
    "fim": FIM,
    "mlm": MLM,
    "prefix_lm": PrefixLM,
}


def get(name: str, base_vocab: int, **options) -> Objective:
    """The objective called `name` for a tokenizer of `base_vocab` ids (options: e.g. fim_rate=0.5)."""
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; choose one of {sorted(OBJECTIVES)} (config.objective)")
    if int(base_vocab) < 1:
        raise ValueError(f"base_vocab={base_vocab} must be >= 1 (the tokenizer's vocab_size)")
    return OBJECTIVES[name](int(base_vocab), **options)


def from_config(config, base_vocab: int) -> Objective:
    """`config.objective` with its options from `config.objectives.<name>` (absent in old runs: defaults)."""
    name = config.get("objective", "causal")
    options = (config.get("objectives") or {}).get(name) or {}
    return get(name, base_vocab, **dict(options))


__all__ = ["FIM", "MLM", "OBJECTIVES", "Causal", "Objective", "PrefixLM", "from_config", "get"]
