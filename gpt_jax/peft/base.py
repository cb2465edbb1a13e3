"""The contract every fine-tuning method implements (full, LoRA, AdaLoRA, adapters, prefix tuning).

A method splits a backbone's GPT params into a trainable tree and a frozen tree, and recombines them
into GPT params for `GPT(model_config).apply`. The train state keeps the two apart
(`TrainState.params` = trainable, `TrainState.frozen` = frozen), so the optimizer only ever sees, and
only keeps state for, the trainable tree, and the frozen tree is carried through steps untouched.
"""

from __future__ import annotations

from typing import Any, Protocol

import jax
import optax

from gpt_jax.config import ModelConfig

Params = Any


class Method(Protocol):
    name: str

    def model_config(self, base: ModelConfig) -> ModelConfig:
        """The backbone architecture this method trains (adapters/prefix add modules; others: `base`)."""

    def split(self, params: Params, rng: jax.Array) -> tuple[Params, Params]:
        """(trainable, frozen) from GPT params of `model_config(...)` (new adapter leaves already initialised)."""

    def combine(self, trainable: Params, frozen: Params, rng: jax.Array | None = None) -> Params:
        """GPT params for the forward pass; `rng` given = training (method dropout on), None = eval."""

    def regularizer(self, trainable: Params) -> jax.Array:
        """Extra loss term (AdaLoRA's orthogonality penalty); 0.0 for most methods."""

    def wrap_optimizer(self, tx: optax.GradientTransformation) -> optax.GradientTransformation:
        """The optimizer over the trainable tree (AdaLoRA chains its rank allocator here); most: tx."""


class Full:
    """Full fine-tuning: every backbone parameter trains."""

    name = "full"

    def model_config(self, base: ModelConfig) -> ModelConfig:
        return base

    def split(self, params, rng):
        return params, {}

    def combine(self, trainable, frozen, rng=None):
        return trainable

    def regularizer(self, trainable):
        return 0.0

    def wrap_optimizer(self, tx):
        return tx


class Frozen(Full):
    """Backbone frozen whole (a linear probe: only the task head trains)."""

    name = "frozen"

    def split(self, params, rng):
        return {}, params

    def combine(self, trainable, frozen, rng=None):
        return frozen
