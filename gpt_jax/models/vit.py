"""ViT encoder (optional conv stem, patch embedding, 2-D positions, pre-LN blocks) and the "vit" classifier family.

The blocks are gpt_jax.model's Block run with an all-True mask, so attention, MLP and norms (and their
logical axes) are the GPT's own; `block_config` is the ModelConfig those blocks see.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from optax.contrib import MuonDimensionNumbers

from gpt_jax.config import ModelConfig
from gpt_jax.layers import Dense, Norm, normal
from gpt_jax.model import Block
from gpt_jax.models.base import ModelFamily
from gpt_jax.optim import map_with_path


@dataclasses.dataclass(frozen=True)
class ViTConfig:
    image_size: int = 28
    patch_size: int = 7
    channels: int = 1
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    conv_stem: bool = True  # two 3x3 convs at full resolution before the patch embedding
    stem_channels: int = 32
    num_classes: int | None = None  # the classifier baseline's head; None for an encoder alone
    dtype: str = "float32"

    def __post_init__(self):
        if self.image_size % self.patch_size:
            raise ValueError(
                f"vit.image_size={self.image_size} is not divisible by vit.patch_size={self.patch_size}; "
                "pick a patch size dividing the image size"
            )
        if self.n_embd % self.n_head:
            raise ValueError(f"vit.n_embd={self.n_embd} is not divisible by vit.n_head={self.n_head}; change one")

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid**2

    def block_config(self) -> ModelConfig:
        return ModelConfig(
            vocab_size=1,
            block_size=self.num_patches,
            n_layer=self.n_layer,
            n_head=self.n_head,
            n_embd=self.n_embd,
            dropout=self.dropout,
            dtype=self.dtype,
            attention="einsum",
        )


def _conv_init():
    return nn.with_logical_partitioning(nn.initializers.lecun_normal(), (None, None, None, None))


class ViTEncoder(nn.Module):
    """images_BxHxWxC (float32 in [0, 1]) -> tokens_BxPxD after the final norm; P = (image/patch)^2."""

    cfg: ViTConfig

    @nn.compact
    def __call__(self, images_BxHxWxC, *, deterministic: bool = True):
        cfg, bcfg = self.cfg, self.cfg.block_config()
        b, h, w, c = images_BxHxWxC.shape
        if (h, w, c) != (cfg.image_size, cfg.image_size, cfg.channels):
            raise ValueError(
                f"images are {h}x{w}x{c} but the encoder takes {cfg.image_size}x{cfg.image_size}x{cfg.channels}; "
                "convert them with the run's preprocessing (gpt_jax.data.image_io.load_image)"
            )
        x = images_BxHxWxC.astype(jnp.float32) - 0.5
        if cfg.conv_stem:
            for i, width in enumerate((cfg.stem_channels // 2, cfg.stem_channels)):
                x = nn.gelu(nn.Conv(width, (3, 3), padding="SAME", kernel_init=_conv_init(), name=f"stem_{i}")(x))
        p, g = cfg.patch_size, cfg.grid
        patches_BxPxF = x.reshape(b, g, p, g, p, x.shape[-1]).transpose(0, 1, 3, 2, 4, 5).reshape(b, g * g, -1)
        # fan-in scaled (not GPT's 0.02): with a 0.02 init the patch signal starts tiny and the encoder learns slowly
        embed = Dense(
            (cfg.n_embd,), (None, "embed"), bcfg, kernel_init=nn.initializers.lecun_normal(), name="patch_embed"
        )
        tokens_BxPxD = embed(patches_BxPxF)
        # 2-D positions: a learned row vector plus a learned column vector per patch
        row = self.param("pos_row", nn.with_logical_partitioning(normal(0.02), (None, "embed")), (g, cfg.n_embd))
        col = self.param("pos_col", nn.with_logical_partitioning(normal(0.02), (None, "embed")), (g, cfg.n_embd))
        tokens_BxPxD = tokens_BxPxD + (row[:, None] + col[None, :]).reshape(g * g, cfg.n_embd)[None]
        tokens_BxPxD = nn.Dropout(cfg.dropout)(tokens_BxPxD, deterministic=deterministic)
        positions_BxP = jnp.broadcast_to(jnp.arange(g * g, dtype=jnp.int32), (b, g * g))
        full_BxPxP = jnp.ones((b, g * g, g * g), bool)  # every patch sees every patch
        for i in range(cfg.n_layer):
            tokens_BxPxD = Block(bcfg, name=f"h_{i}")(tokens_BxPxD, positions_BxP, full_BxPxP, deterministic)
        tokens_BxPxD = Norm(bcfg, name="ln_f")(tokens_BxPxD)
        return nn.with_logical_constraint(tokens_BxPxD, ("batch", "length", "embed"))


class ViTClassifier(nn.Module):
    """images_BxHxWxC -> logits_BxC: the encoder's mean token through a linear head (the baseline)."""

    cfg: ViTConfig

    @nn.compact
    def __call__(self, images_BxHxWxC, *, deterministic: bool = True):
        tokens_BxPxD = ViTEncoder(self.cfg, name="vit")(images_BxHxWxC, deterministic=deterministic)
        head = Dense((self.cfg.num_classes,), ("embed", None), self.cfg.block_config(), name="head", use_bias=True)
        return head(tokens_BxPxD.mean(axis=1))


FIELDS = tuple(f.name for f in dataclasses.fields(ViTConfig))


def vit_config_from(section: Mapping[str, Any] | None, **overrides) -> ViTConfig:
    """ViTConfig from a `config.model.vit` mapping: unset (None) keys keep the defaults."""
    values = {k: v for k, v in dict(section or {}).items() if v is not None}
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise ValueError(f"unknown model.vit key(s) {unknown}; valid keys: {sorted(FIELDS)}")
    return ViTConfig(**{**values, **overrides})


def config_from(model_section: Mapping[str, Any], vocab_size: int) -> ViTConfig:
    del vocab_size  # no text
    cfg = vit_config_from(model_section.get("vit"))
    if not cfg.num_classes:
        raise ValueError("model.vit.num_classes is not set; the vit family is a classifier (e.g. 10 for digits)")
    return cfg


def init(cfg: ViTConfig, rng):
    images = jnp.zeros((1, cfg.image_size, cfg.image_size, cfg.channels), jnp.float32)
    return ViTClassifier(cfg).init({"params": rng}, images)["params"]


def matrix_dims(params):
    """(fan_in, fan_out) of the Transformer kernels (as the gpt family's); convs and embeddings: None."""

    def dims(path, leaf):
        name = path[-1]
        if not name.endswith("kernel") or leaf.ndim == 4 or "head" in path or "patch_embed" in path:
            return None
        if leaf.ndim == 2:
            return MuonDimensionNumbers(reduction_axis=0, output_axis=1)
        if name == "out_kernel":
            return MuonDimensionNumbers(reduction_axis=(0, 1), output_axis=2)
        return MuonDimensionNumbers(reduction_axis=0, output_axis=(1, 2))

    return map_with_path(dims, params)


def encoder_flops(cfg: ViTConfig) -> float:
    """Forward matmul FLOPs of one image through the encoder."""
    pix, p, d = cfg.image_size**2, cfg.num_patches, cfg.n_embd
    stem = 2 * pix * 9 * (cfg.channels * cfg.stem_channels // 2 + cfg.stem_channels**2 // 2) if cfg.conv_stem else 0
    width = cfg.stem_channels if cfg.conv_stem else cfg.channels
    embed = 2 * pix * width * d
    blocks = cfg.n_layer * p * (2 * 12 * d * d + 4 * p * d)
    return float(stem + embed + blocks)


def flops_per_token(cfg: ViTConfig, seq_len: int, lm_head: bool = False) -> float:
    """Per image (the classify task counts images as its tokens)."""
    del seq_len, lm_head
    return encoder_flops(cfg) + 2 * cfg.n_embd * (cfg.num_classes or 0)


FAMILY = ModelFamily(
    name="vit",
    config_from=config_from,
    config_from_saved=lambda fields: ViTConfig(**{k: v for k, v in fields.items() if k in FIELDS}),
    module=ViTClassifier,
    init=init,
    matrix_dims=matrix_dims,
    flops_per_token=flops_per_token,
)
