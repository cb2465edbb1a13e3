"""Prefix tuning (Li & Liang 2021): only per-layer key/value prefix slots train.

The method puts a `Prefix` in every attention layer through the model's kv_prefix extension slot
(gpt_jax.model.Extensions): h_i/attn/prefix/{prefix_key, prefix_value} [G, P, K], or with hidden > 0
the reparameterisation h_i/attn/prefix/{prefix_embed [P, D], prefix_fc, prefix_proj}. Every query
attends the P slots; real tokens keep their positions. Unlike adapters a fresh prefix is not the
identity (its slots take attention mass), so training starts close to, not at, the base model.

  method = PrefixTuning.from_config(config.peft.prefix, num_steps)
  cfg = method.model_config(base_cfg)
  params = graft(init_params(cfg, rng), base_params)
  trainable, frozen = method.split(params, rng)
  ...
  cfg0, params0 = fold(cfg, method.combine(trainable, frozen))  # after training: direct slots, no MLP
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from gpt_jax.config import ModelConfig
from gpt_jax.layers import Dense, normal
from gpt_jax.model import extend, extensions_of
from gpt_jax.peft.base import ModuleMethod, Params, options, split_by

__all__ = ["Prefix", "PrefixSlots", "PrefixTuning", "fold"]


class Prefix(nn.Module):
    """P = `length` trainable key/value slots of one layer -> (pk_GxPxK, pv_GxPxK), float32.

    hidden = 0: the slots are parameters (prefix_key, prefix_value). hidden > 0: they are an MLP (tanh)
    of a per-layer prefix_embed [P, D], the reparameterisation the paper found trains more stably;
    `fold` turns a trained one into direct slots. Slots carry no position (no rope).
    """

    cfg: ModelConfig
    length: int
    hidden: int = 0

    @nn.compact
    def __call__(self):
        cfg = self.cfg
        g, p, k = cfg.kv_heads, self.length, cfg.head_dim

        def param(name, axes, shape, std=1.0):
            return self.param(name, nn.with_logical_partitioning(normal(std), axes), shape, cfg.params_dtype)

        if not self.hidden:
            # Small slots: HF PEFT's N(0, 1) keys/values swamp a small base's attention at step 0;
            # 0.02 starts near the base.
            pk_GxPxK = param("prefix_key", ("kv_heads", None, "head_dim"), (g, p, k), 0.02)
            pv_GxPxK = param("prefix_value", ("kv_heads", None, "head_dim"), (g, p, k), 0.02)
            return pk_GxPxK.astype(jnp.float32), pv_GxPxK.astype(jnp.float32)
        embed_PxD = param("prefix_embed", (None, "embed"), (p, cfg.n_embd))  # N(0, 1), as HF PEFT's prefix embedding
        fc = Dense((self.hidden,), ("embed", None), cfg, use_bias=True, name="prefix_fc")
        proj = Dense((2, g, k), (None, None, "kv_heads", "head_dim"), cfg, use_bias=True, name="prefix_proj")
        kv_PxTxGxK = proj(jnp.tanh(fc(embed_PxD)))  # T = 2: keys, values
        kv_TxGxPxK = jnp.transpose(kv_PxTxGxK, (1, 2, 0, 3))
        return kv_TxGxPxK[0], kv_TxGxPxK[1]


@dataclasses.dataclass(frozen=True)
class PrefixSlots:
    """The kv_prefix extension: a Prefix named "prefix" in each attention layer."""

    length: int
    hidden: int = 0

    def __call__(self, cfg: ModelConfig) -> nn.Module:
        return Prefix(cfg, self.length, self.hidden, name="prefix")


def fold(cfg: ModelConfig, params: Params) -> tuple[ModelConfig, Params]:
    """(cfg with direct slots (hidden=0), params with each reparameterised prefix replaced by the
    prefix_key/prefix_value it computes): the same model without the MLP, for inference.

    Works on full GPT params or on the trainable tree alone (any tree holding attn/prefix nodes).
    """
    slots = extensions_of(cfg).kv_prefix
    if not isinstance(slots, PrefixSlots) or not slots.hidden:
        return cfg, params
    module = Prefix(cfg, slots.length, slots.hidden)

    def direct(sub):
        sub = nn.meta.unbox(sub)
        run = lambda p: module.apply({"params": p})
        if sub["prefix_embed"].ndim == 3:  # scan_layers: a leading layer axis
            run = jax.vmap(run)
        k, v = run(sub)
        dtype = sub["prefix_embed"].dtype
        return {"prefix_key": k.astype(dtype), "prefix_value": v.astype(dtype)}

    def walk(node):
        if not isinstance(node, Mapping):
            return node
        return {k: direct(v) if k == "prefix" and "prefix_embed" in v else walk(v) for k, v in node.items()}

    return extend(cfg, kv_prefix=PrefixSlots(slots.length)), walk(params)


def _is_prefix(path: tuple[str, ...]) -> bool:
    return "prefix" in path


@dataclasses.dataclass(frozen=True)
class PrefixTuning(ModuleMethod):
    """Only the prefix leaves (h_*/attn/prefix/...) train; the backbone is frozen."""

    length: int = 8  # slots per layer
    hidden: int = 0  # > 0: the slots come from an MLP this wide (Li & Liang's reparameterisation)

    name: ClassVar[str] = "prefix"

    def __post_init__(self):
        if int(self.length) < 1:
            raise ValueError(f"peft.prefix.length={self.length} must be >= 1 for peft.method=prefix")
        if int(self.hidden) < 0:
            raise ValueError(f"peft.prefix.hidden={self.hidden} must be >= 0 (0 = direct slots, no MLP)")

    @classmethod
    def from_config(cls, section: Mapping, num_steps: int = 0) -> "PrefixTuning":
        return cls(**options(cls, section))

    def model_config(self, base: ModelConfig) -> ModelConfig:
        return extend(base, kv_prefix=PrefixSlots(int(self.length), int(self.hidden)))

    def split(self, params: Params, rng=None) -> tuple[Params, Params]:
        return split_by(params, _is_prefix, "prefix")

    def fold(self, cfg: ModelConfig, params: Params) -> tuple[ModelConfig, Params]:
        return fold(cfg, params)
