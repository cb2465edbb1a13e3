"""The contract every fine-tuning method implements (full, LoRA, AdaLoRA, adapters, prefix tuning).

A method splits a backbone's GPT params into a trainable tree and a frozen tree, and recombines them
into GPT params for `GPT(method.model_config(base)).apply`. The train state keeps the two apart
(`TrainState.params` = trainable, `TrainState.frozen` = frozen), so the optimizer only ever sees, and
only keeps state for, the trainable tree, and the frozen tree is carried through steps untouched.

A method's options are its own section of the run config, `config.peft.<name>` (gpt_jax/base_config.py);
`from_config(section, num_steps)` builds it. Methods that add modules (adapters, prefix tuning) do it
through the model's extension slots (gpt_jax.model.Extensions); the tree helpers below serve them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import jax
import optax
from flax import traverse_util

from gpt_jax.config import ModelConfig

Params = Any


class Method(Protocol):
    name: str

    @classmethod
    def from_config(cls, section: Mapping[str, Any], num_steps: int) -> "Method":
        """The method from its config section (`config.peft.<name>`; keys it lacks keep their defaults)."""

    def model_config(self, base: ModelConfig) -> ModelConfig:
        """The model this method trains: `base`, or `base` extended with its modules (adapters/prefix)."""

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

    @classmethod
    def from_config(cls, section=None, num_steps: int = 0):
        return cls()

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


def options(cls, section: Mapping[str, Any] | None) -> dict[str, Any]:
    """{field: value} for a method dataclass from its config section: the keys it has, cast like the
    field defaults; keys it lacks (or sets to None) keep the defaults, keys that are no field are ignored."""
    section = section or {}
    out = {}
    for f in dataclasses.fields(cls):
        value = section.get(f.name) if f.init and f.name in section else None
        if value is not None:
            out[f.name] = type(f.default)(value)
    return out


# ----------------------------------------------------------------------------- param trees


def _shape(leaf) -> tuple[int, ...]:
    return tuple(getattr(leaf, "value", leaf).shape)  # boxed (nn.LogicallyPartitioned) or not


def _flat(params: Params) -> dict[tuple[str, ...], object]:
    return traverse_util.flatten_dict(dict(params)) if params else {}


def graft(new_params: Params, base_params: Params) -> Params:
    """`new_params` (a model with extra modules, e.g. adapters) with every leaf of `base_params` copied in.

    Leaves only the new model has keep their init; a base leaf the new tree lacks, or whose shape
    differs, is an error (the two configs do not share a backbone). Boxed leaves keep their box.
    """
    new, base = _flat(new_params), _flat(base_params)
    for path, leaf in base.items():
        name = "/".join(path)
        if path not in new:
            raise ValueError(
                f"base param {name} has no place in the new params; build the new config from the base one "
                "(same scan_layers, tie_embeddings, ...)"
            )
        if _shape(new[path]) != _shape(leaf):
            raise ValueError(
                f"base param {name} has shape {_shape(leaf)} but the new params want {_shape(new[path])}; "
                "build the new config from the base one"
            )
        value = getattr(leaf, "value", leaf)
        new[path] = new[path].replace_boxed(value) if hasattr(new[path], "replace_boxed") else value
    return traverse_util.unflatten_dict(new)


def split_by(params: Params, is_trainable: Callable[[tuple[str, ...]], bool], what: str) -> tuple[Params, Params]:
    """(trainable, frozen): the leaves whose path `is_trainable`, and the rest, each keeping the nesting."""
    flat = _flat(params)
    train = {p: x for p, x in flat.items() if is_trainable(p)}
    if not train:
        raise ValueError(
            f"the params hold no {what} leaves; init the params of method.model_config(base_cfg) "
            "and graft the base weights in (gpt_jax.peft.base.graft)"
        )
    frozen = {p: x for p, x in flat.items() if not is_trainable(p)}
    return traverse_util.unflatten_dict(train), traverse_util.unflatten_dict(frozen) if frozen else {}


def merge(trainable: Params, frozen: Params) -> Params:
    """The deep merge of two disjoint trees (split_by's inverse)."""
    return traverse_util.unflatten_dict({**_flat(frozen), **_flat(trainable)})


class ModuleMethod:
    """A method whose trainable leaves are extra modules in the GPT tree: combine = deep merge."""

    def combine(self, trainable: Params, frozen: Params, rng=None) -> Params:
        return merge(trainable, frozen)

    def regularizer(self, trainable: Params):
        return 0.0

    def wrap_optimizer(self, tx):
        return tx
