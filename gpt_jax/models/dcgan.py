"""The DCGAN family (issue 19): a generator (noise -> dense -> transposed convolutions -> image) and a
discriminator (strided convolutions, leaky ReLU -> one logit), optionally class-conditional.

Params are {"generator": ..., "discriminator": ...}: the two sub-models a GAN task trains with its own
optimizers (gpt_jax.tasks.gan). No BatchNorm: its running statistics would be state outside the params,
and batch statistics in D leak across real and fake batches; the norms here are per sample.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from optax.contrib import MuonDimensionNumbers

from gpt_jax.models.base import ModelFamily
from gpt_jax.optim import map_with_path

NORMS = ("layer", "group", "none")
KERNEL = 4  # every convolution is 4x4, stride 2 (DCGAN)
OUTPUTS = ("tanh", "sigmoid")


@dataclasses.dataclass(frozen=True)
class DCGANConfig:
    image_size: int = 28  # square images; image_size / 2**n_up is the generator's first feature map
    channels: int = 1
    z_dim: int = 100
    n_up: int = 2  # stride-2 stages in G (upsampling) and in D (downsampling)
    g_width: int = 64  # G channels on its first map; halved at each upsampling
    d_width: int = 32  # D channels after its first convolution; doubled at each downsampling
    num_classes: int = 0  # > 0: class-conditional (one-hot label into G, projection in D)
    g_norm: str = "layer"  # layer | group | none (per-sample: nothing leaks across a batch)
    d_norm: str = "none"  # layer | none
    output: str = "tanh"  # tanh: images in [-1, 1]; sigmoid: [0, 1]

    def __post_init__(self):
        if self.g_norm not in NORMS or self.d_norm not in ("layer", "none"):
            raise ValueError(
                f"model.g_norm={self.g_norm!r} / model.d_norm={self.d_norm!r}: g_norm is one of {NORMS}, "
                "d_norm one of ('layer', 'none')"
            )
        if self.output not in OUTPUTS:
            raise ValueError(f"model.output={self.output!r} is not one of {OUTPUTS}")
        if self.image_size % 2**self.n_up:
            raise ValueError(
                f"model.image_size={self.image_size} is not divisible by 2**model.n_up={2**self.n_up}; "
                "lower n_up or pad the images"
            )
        if self.g_width // 2 ** (self.n_up - 1) < 1:
            raise ValueError(f"model.g_width={self.g_width} halves below 1 channel in {self.n_up} stages; raise it")

    @property
    def start(self) -> int:
        return self.image_size // 2**self.n_up

    def g_channels(self) -> list[int]:
        """Output channels of each transposed convolution (the last is the image's)."""
        return [self.g_width // 2 ** (i + 1) for i in range(self.n_up - 1)] + [self.channels]

    def d_channels(self) -> list[int]:
        return [self.d_width * 2**i for i in range(self.n_up)]


def _kernel(*axes):
    return nn.with_logical_partitioning(nn.initializers.normal(0.02), axes)


def _norm(kind: str, name: str):
    if kind == "layer":  # over H, W, C of each sample
        return nn.LayerNorm(reduction_axes=(-3, -2, -1), feature_axes=-1, name=name)
    if kind == "group":
        return nn.GroupNorm(num_groups=None, group_size=1, name=name)  # per channel per sample
    return lambda x: x


# [phase, tap] -> row of the 4x4 kernel (4: a zero row). Output row 2m + phase of a stride-2 transposed
# convolution sums input rows m - 1, m, m + 1 (the taps) times these kernel rows.
_PHASE_TAPS = np.array([[0, 2, 4], [4, 1, 3]])


class ConvTranspose4x4Stride2(nn.Module):
    """flax's nn.ConvTranspose(features, (4, 4), strides=(2, 2), padding="SAME"), the same params and
    output, computed as one stride-1 3x3 convolution onto the 4 output phases, then depth-to-space.

    XLA on CPU runs the transposed convolution as an input-dilated one (3/4 of its work on zeros), and
    its kernel gradient ~6x slower than this (G of configs/gan/mnist_dcgan.py, batch 64: 130 ms vs 22 ms per gradient)."""

    features: int

    @nn.compact
    def __call__(self, x_BxHxWxC):
        cin = x_BxHxWxC.shape[-1]
        w = self.param("kernel", _kernel(None, None, None, "mlp"), (KERNEL, KERNEL, cin, self.features))
        b = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)), (self.features,))
        taps = _PHASE_TAPS.T  # [tap, phase]
        w_pad = jnp.pad(w, ((0, 1), (0, 1), (0, 0), (0, 0)))
        w3 = w_pad[taps[:, :, None, None], taps[None, None, :, :]]  # [ty, py, tx, px, cin, cout]
        w3 = w3.transpose(0, 2, 4, 1, 3, 5).reshape(3, 3, cin, 4 * self.features)
        y = jax.lax.conv_general_dilated(x_BxHxWxC, w3, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        n, h, wd, _ = y.shape
        y = y.reshape(n, h, wd, 2, 2, self.features).transpose(0, 1, 3, 2, 4, 5)
        return y.reshape(n, 2 * h, 2 * wd, self.features) + b


class Generator(nn.Module):
    cfg: DCGANConfig

    @nn.compact
    def __call__(self, z_BxZ, labels_B=None):
        c = self.cfg
        if c.num_classes:
            z_BxZ = jnp.concatenate([z_BxZ, jax.nn.one_hot(labels_B, c.num_classes, dtype=z_BxZ.dtype)], -1)
        h = nn.Dense(c.start * c.start * c.g_width, kernel_init=_kernel("embed", "mlp"), name="project")(z_BxZ)
        h_BxHxWxC = h.reshape(z_BxZ.shape[0], c.start, c.start, c.g_width)
        h_BxHxWxC = nn.relu(_norm(c.g_norm, "norm_0")(h_BxHxWxC))
        channels = c.g_channels()
        for i, out in enumerate(channels):
            h_BxHxWxC = ConvTranspose4x4Stride2(out, name=f"up_{i}")(h_BxHxWxC)
            if i < len(channels) - 1:
                h_BxHxWxC = nn.relu(_norm(c.g_norm, f"norm_{i + 1}")(h_BxHxWxC))
        act = jnp.tanh if c.output == "tanh" else jax.nn.sigmoid
        return act(h_BxHxWxC)  # images_BxHxWxC


class Discriminator(nn.Module):
    cfg: DCGANConfig

    @nn.compact
    def __call__(self, images_BxHxWxC, labels_B=None, features: bool = False):
        c, k = self.cfg, (KERNEL, KERNEL)
        h = images_BxHxWxC
        for i, out in enumerate(c.d_channels()):
            h = nn.Conv(out, k, strides=(2, 2), padding="SAME", kernel_init=_kernel(None, None, None, "mlp"))(h)
            if i > 0:  # DCGAN: no norm on the first layer
                h = _norm(c.d_norm, f"norm_{i}")(h)
            h = nn.leaky_relu(h, 0.2)
        h_BxF = h.reshape(h.shape[0], -1)
        if features:
            return h_BxF
        logit_B = nn.Dense(1, kernel_init=_kernel("mlp", None), name="logit")(h_BxF)[:, 0]
        if c.num_classes:  # projection discriminator (Miyato & Koyama 2018): + <embed(y), h>
            embed = nn.Embed(c.num_classes, h_BxF.shape[-1], embedding_init=_kernel(None, "mlp"), name="class_embed")
            logit_B = logit_B + jnp.sum(embed(labels_B) * h_BxF, -1)
        return logit_B


class DCGAN(nn.Module):
    """Both sub-models, for init (params {"generator", "discriminator"}); the task applies each alone."""

    cfg: DCGANConfig

    def setup(self):
        self.generator = Generator(self.cfg)
        self.discriminator = Discriminator(self.cfg)

    def __call__(self, z_BxZ, labels_B=None):
        return self.discriminator(self.generator(z_BxZ, labels_B), labels_B)


def config_from(model_section: Mapping[str, Any], vocab_size: int) -> DCGANConfig:
    del vocab_size  # images: no vocabulary
    keys = {f.name for f in dataclasses.fields(DCGANConfig)}
    return DCGANConfig(**{k: model_section[k] for k in keys if model_section.get(k) is not None})


def config_from_saved(fields: dict) -> DCGANConfig:
    keys = {f.name for f in dataclasses.fields(DCGANConfig)}
    return DCGANConfig(**{k: v for k, v in fields.items() if k in keys})


def init(cfg: DCGANConfig, rng):
    z = jnp.zeros((1, cfg.z_dim), jnp.float32)
    labels = jnp.zeros((1,), jnp.int32) if cfg.num_classes else None
    return DCGAN(cfg).init({"params": rng}, z, labels)["params"]


def matrix_dims(params):
    """Dense kernels [in, out]; conv kernels [kh, kw, in, out] reduce over (kh, kw, in)."""

    def dims(path, leaf):
        if path[-1] != "kernel":
            return None
        return MuonDimensionNumbers(tuple(range(leaf.ndim - 1)), leaf.ndim - 1)

    return map_with_path(dims, params)


def flops_per_token(cfg: DCGANConfig, seq_len: int = 1, lm_head: bool = False) -> float:
    """Forward FLOPs of one image (the "token") through G and then D (2 x multiply-adds; a transposed
    convolution counted by its useful work, k*k*Cin*Cout per input pixel)."""
    del seq_len, lm_head
    kk, cond = KERNEL**2, cfg.num_classes
    side, width = cfg.start, cfg.g_width
    macs = (cfg.z_dim + cond) * side * side * width
    for out in cfg.g_channels():
        macs += side * side * kk * width * out
        side, width = side * 2, out
    side, width = cfg.image_size, cfg.channels
    for out in cfg.d_channels():
        side //= 2
        macs += side * side * kk * width * out
        width = out
    features = side * side * width
    macs += features * (2 if cond else 1)
    return 2.0 * macs


FAMILY = ModelFamily(
    name="dcgan",
    config_from=config_from,
    config_from_saved=config_from_saved,
    module=DCGAN,
    init=init,
    matrix_dims=matrix_dims,
    flops_per_token=flops_per_token,
)


def image_shape(cfg: DCGANConfig) -> tuple[int, int, int]:
    return (cfg.image_size, cfg.image_size, cfg.channels)


def num_params(tree) -> int:
    return sum(math.prod(x.shape) for x in jax.tree.leaves(nn.meta.unbox(tree)))
