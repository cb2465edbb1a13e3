"""Prefix tuning (Li & Liang 2021): only per-layer key/value prefix slots train.

The slots live in the model (`ModelConfig.prefix_len`, gpt_jax.attention.Prefix): every layer's
attention gets h_i/attn/prefix/{prefix_key, prefix_value} [G, P, K], or with prefix_hidden > 0 the
reparameterisation h_i/attn/prefix/{prefix_embed [P, D], prefix_fc, prefix_proj}. Every query
attends the P slots; real tokens keep their positions. Unlike adapters a fresh prefix is not the
identity (its slots take attention mass), so training starts close to, not at, the base model.

  method = PrefixTuning.from_config(config.peft, num_steps)
  cfg = method.model_config(base_cfg)
  params = graft(init_params(cfg, rng), base_params)
  trainable, frozen = method.split(params, rng)
  ...
  cfg0, params0 = fold(cfg, method.combine(trainable, frozen))  # after training: direct slots, no MLP
"""

from __future__ import annotations

from typing import Mapping

import flax.linen as nn
import jax

from gpt_jax.attention import Prefix
from gpt_jax.config import ModelConfig
from gpt_jax.peft.adapters import ModuleMethod, graft, split_by
from gpt_jax.peft.base import Params

__all__ = ["PrefixTuning", "fold", "graft"]


def fold(cfg: ModelConfig, params: Params) -> tuple[ModelConfig, Params]:
    """(cfg with prefix_hidden=0, params with each reparameterised prefix replaced by the
    prefix_key/prefix_value it computes): the same model without the MLP, for inference.

    Works on full GPT params or on the trainable tree alone (any tree holding attn/prefix nodes).
    """
    if not cfg.prefix_hidden:
        return cfg, params
    slots = Prefix(cfg)

    def direct(sub):
        sub = nn.meta.unbox(sub)
        run = lambda p: slots.apply({"params": p})
        if sub["prefix_embed"].ndim == 3:  # scan_layers: a leading layer axis
            run = jax.vmap(run)
        k, v = run(sub)
        dtype = sub["prefix_embed"].dtype
        return {"prefix_key": k.astype(dtype), "prefix_value": v.astype(dtype)}

    def walk(node):
        if not isinstance(node, Mapping):
            return node
        return {k: direct(v) if k == "prefix" and "prefix_embed" in v else walk(v) for k, v in node.items()}

    return cfg.replace(prefix_hidden=0), walk(params)


def _is_prefix(path: tuple[str, ...]) -> bool:
    return "prefix" in path


class PrefixTuning(ModuleMethod):
    """Only the prefix leaves (h_*/attn/prefix/...) train; the backbone is frozen."""

    name = "prefix"

    def __init__(self, prefix_len: int, prefix_hidden: int = 0):
        if prefix_len < 1:
            raise ValueError(f"peft.prefix_len={prefix_len} must be >= 1 for peft.method=prefix")
        if prefix_hidden < 0:
            raise ValueError(f"peft.prefix_hidden={prefix_hidden} must be >= 0 (0 = direct slots, no MLP)")
        self.prefix_len, self.prefix_hidden = int(prefix_len), int(prefix_hidden)

    @classmethod
    def from_config(cls, peft: Mapping, num_steps: int) -> "PrefixTuning":
        return cls(int(peft["prefix_len"]), int(peft.get("prefix_hidden", 0) or 0))

    def model_config(self, base: ModelConfig) -> ModelConfig:
        return base.replace(prefix_len=self.prefix_len, prefix_hidden=self.prefix_hidden)

    def split(self, params: Params, rng=None) -> tuple[Params, Params]:
        return split_by(params, _is_prefix, "prefix")

    def fold(self, cfg: ModelConfig, params: Params) -> tuple[ModelConfig, Params]:
        return fold(cfg, params)
