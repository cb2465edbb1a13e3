"""Bottleneck adapters (Houlsby et al. 2019): only small per-layer adapter MLPs train.

The modules live in the model (`ModelConfig.adapter_dim`, gpt_jax.layers.Adapter): every block gets
h_i/adapter_attn and h_i/adapter_mlp, each y + up(gelu(down(y))) with `up` zero-initialised, so the
fresh model computes exactly what its base did. Starting from a base checkpoint:

  method = Adapters.from_config(config.peft, num_steps)
  cfg = method.model_config(base_cfg)
  params = graft(init_params(cfg, rng), base_params)   # base weights in, adapters freshly initialised
  trainable, frozen = method.split(params, rng)

`graft` and the tree helpers here are shared with gpt_jax.peft.prefix.
"""

from __future__ import annotations

from typing import Callable, Mapping

from flax import traverse_util

from gpt_jax.config import ModelConfig
from gpt_jax.peft.base import Params

ADAPTER_MODULES = ("adapter_attn", "adapter_mlp")


def _shape(leaf) -> tuple[int, ...]:
    return tuple(getattr(leaf, "value", leaf).shape)  # boxed (nn.LogicallyPartitioned) or not


def _flat(params: Params) -> dict[tuple[str, ...], object]:
    return traverse_util.flatten_dict(dict(params)) if params else {}


def graft(new_params: Params, base_params: Params) -> Params:
    """`new_params` (a config with extra modules, e.g. adapters) with every leaf of `base_params` copied in.

    Leaves only the new config has keep their init; a base leaf the new tree lacks, or whose shape
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
            "and graft the base weights in (gpt_jax.peft.adapters.graft)"
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


class Adapters(ModuleMethod):
    """Only the adapter leaves (h_*/adapter_attn, h_*/adapter_mlp) train; the backbone is frozen."""

    name = "adapters"

    def __init__(self, adapter_dim: int):
        if adapter_dim < 1:
            raise ValueError(f"peft.adapter_dim={adapter_dim} must be >= 1 for peft.method=adapters")
        self.adapter_dim = int(adapter_dim)

    @classmethod
    def from_config(cls, peft: Mapping, num_steps: int) -> "Adapters":
        return cls(int(peft["adapter_dim"]))

    def model_config(self, base: ModelConfig) -> ModelConfig:
        return base.replace(adapter_dim=self.adapter_dim)

    def split(self, params: Params, rng=None) -> tuple[Params, Params]:
        return split_by(params, lambda path: any(k in ADAPTER_MODULES for k in path), "adapter")
