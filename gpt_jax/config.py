"""Typed model config, built from the run's ConfigDict so layers never see a ConfigDict."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp

from gpt_jax.attention_kernels import KERNELS

POSITIONS = ("learned", "sinusoidal", "rope")
NORMS = ("layernorm", "rmsnorm")
NORM_GRADS = ("autodiff", "custom")
MLPS = ("gelu", "swiglu")
ATTENTIONS = ("auto", "dot_product", "einsum", *KERNELS)  # KERNELS: gpt_jax.attention_kernels
REMATS = ("none", "full", "dots")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture of a decoder-only GPT. The defaults are GPT-2 small (124M)."""

    vocab_size: int = 50257
    block_size: int = 1024
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    n_kv_head: int | None = None  # None = n_head (multi-head); fewer = grouped-query attention
    d_ff: int | None = None  # None = 4 * n_embd
    dropout: float = 0.0
    bias: bool = True
    pos: str = "learned"
    norm: str = "layernorm"
    norm_eps: float = 1e-5
    mlp: str = "gelu"
    tie_embeddings: bool = True
    rope_theta: float = 10000.0
    # Matmul operand dtype; accumulation, residual stream, norms and softmax stay float32.
    dtype: str = "float32"
    param_dtype: str = "float32"
    attention: str = "auto"  # auto: einsum on CPU (measured faster there), cudnn on GPU in bf16, else dot_product
    remat: str = "none"
    scan_layers: bool = False
    # Norm backward: "custom" = gpt_jax.layers.residual_norm's hand-written VJP (same gradients up to float
    # rounding; stops XLA:CPU recomputing the residual stream's gradient in every consumer); "autodiff" for
    # forward-mode AD (jax.jvp) through the model.
    norm_grad: str = "custom"

    def __post_init__(self):
        def check(name, value, allowed):
            if value not in allowed:
                raise ValueError(
                    f"model.{name}={value!r} is not one of {allowed}; set config.model.{name} to one of them"
                )

        check("pos", self.pos, POSITIONS)
        check("norm", self.norm, NORMS)
        check("mlp", self.mlp, MLPS)
        check("attention", self.attention, ATTENTIONS)
        check("remat", self.remat, REMATS)
        check("norm_grad", self.norm_grad, NORM_GRADS)
        check("dtype", self.dtype, tuple(DTYPES))
        check("param_dtype", self.param_dtype, tuple(DTYPES))
        if self.n_embd % self.n_head:
            raise ValueError(
                f"model.n_embd={self.n_embd} is not divisible by model.n_head={self.n_head}; change one of them"
            )
        if self.n_head % self.kv_heads:
            raise ValueError(
                f"model.n_head={self.n_head} is not divisible by model.n_kv_head={self.kv_heads}; "
                "pick n_kv_head dividing n_head"
            )
        if self.pos == "rope" and self.head_dim % 2:
            raise ValueError(f"rope needs an even head dim, got {self.head_dim}; change model.n_embd or model.n_head")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head

    @property
    def ff_dim(self) -> int:
        return self.d_ff or 4 * self.n_embd

    @property
    def compute_dtype(self):
        return DTYPES[self.dtype]

    @property
    def params_dtype(self):
        return DTYPES[self.param_dtype]

    def replace(self, **kw) -> "ModelConfig":
        return dataclasses.replace(self, **kw)


# GPT-2 sizes (Radford et al. 2019); vocab 50257, context 1024, tied embeddings.
PRESETS: dict[str, dict[str, int]] = {
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768),
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024),
    "gpt2-large": dict(n_layer=36, n_head=20, n_embd=1280),
    "gpt2-xl": dict(n_layer=48, n_head=25, n_embd=1600),
    # nanoGPT's shakespeare_char recipes (vocab set from the tokenizer at run time).
    "shakespeare-char-cpu": dict(n_layer=4, n_head=4, n_embd=128, block_size=64),
    "shakespeare-char": dict(n_layer=6, n_head=6, n_embd=384, block_size=256),
}

FIELDS = tuple(f.name for f in dataclasses.fields(ModelConfig))


def model_config_from(model_cfg: Mapping[str, Any], **overrides) -> ModelConfig:
    """ModelConfig from `config.model` (a ConfigDict or dict): preset first, explicit keys on top.

    Keys set to None are left at the preset/default value, so a config can list every
    knob without pinning it.
    """
    values = dict(model_cfg)
    preset = values.pop("preset", None)
    values.pop("family", None)  # which family: gpt_jax.models.registry
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise ValueError(f"unknown model config key(s) {unknown}; valid keys: {sorted(FIELDS) + ['preset']}")
    kwargs: dict[str, Any] = {}
    if preset:
        if preset not in PRESETS:
            raise ValueError(f"unknown model.preset={preset!r}; choose one of {sorted(PRESETS)}")
        kwargs.update(PRESETS[preset])
    kwargs.update({k: v for k, v in values.items() if v is not None})
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    return ModelConfig(**kwargs)
