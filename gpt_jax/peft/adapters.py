"""Bottleneck adapters (Houlsby et al. 2019): only small per-layer adapter MLPs train.

The method puts an `Adapter` on each sublayer's output through the model's sublayer extension slot
(gpt_jax.model.Extensions): every block gets h_i/adapter_attn and h_i/adapter_mlp, each
y + up(gelu(down(y))) with `up` zero-initialised, so the fresh model computes exactly what its base
did. Starting from a base checkpoint:

  method = Adapters.from_config(config.peft.adapters, num_steps)
  cfg = method.model_config(base_cfg)
  params = graft(init_params(cfg, rng), base_params)   # base weights in, adapters freshly initialised
  trainable, frozen = method.split(params, rng)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import ClassVar

import flax.linen as nn

from gpt_jax.config import ModelConfig
from gpt_jax.layers import Dense
from gpt_jax.model import extend
from gpt_jax.peft.base import ModuleMethod, Params, options, split_by

ADAPTER_MODULES = ("adapter_attn", "adapter_mlp")


class Adapter(nn.Module):
    """y + up(gelu(down(y))), bottleneck `dim`. `up` starts at zero, so a fresh adapter is the identity
    and training moves only the small bottleneck."""

    cfg: ModelConfig
    dim: int

    @nn.compact
    def __call__(self, y_BxLxD):
        cfg = self.cfg
        h_BxLxA = Dense((self.dim,), ("embed", None), cfg, use_bias=True, name="down")(y_BxLxD)
        h_BxLxA = nn.gelu(h_BxLxA, approximate=True)
        up = Dense((cfg.n_embd,), (None, "embed"), cfg, kernel_init=nn.initializers.zeros, use_bias=True, name="up")
        return y_BxLxD + up(h_BxLxA)


@dataclasses.dataclass(frozen=True)
class AdapterModules:
    """The sublayer extension: an Adapter named adapter_<sublayer> (attn, mlp) in each block."""

    dim: int

    def __call__(self, cfg: ModelConfig, sublayer: str) -> nn.Module:
        return Adapter(cfg, self.dim, name=f"adapter_{sublayer}")


@dataclasses.dataclass(frozen=True)
class Adapters(ModuleMethod):
    """Only the adapter leaves (h_*/adapter_attn, h_*/adapter_mlp) train; the backbone is frozen."""

    dim: int = 16  # bottleneck width

    name: ClassVar[str] = "adapters"

    def __post_init__(self):
        if int(self.dim) < 1:
            raise ValueError(f"peft.adapters.dim={self.dim} must be >= 1 for peft.method=adapters")

    @classmethod
    def from_config(cls, section: Mapping, num_steps: int = 0) -> "Adapters":
        return cls(**options(cls, section))

    def model_config(self, base: ModelConfig) -> ModelConfig:
        return extend(base, sublayer=AdapterModules(int(self.dim)))

    def split(self, params: Params, rng=None) -> tuple[Params, Params]:
        return split_by(params, lambda path: any(k in ADAPTER_MODULES for k in path), "adapter")
