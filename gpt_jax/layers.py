"""Building blocks: a mixed-precision dense layer, norms, MLPs and positional encodings.

Every parameter carries logical axis names ("embed", "mlp", "heads", ...) that
`gpt_jax.sharding` maps to mesh axes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gpt_jax.config import ModelConfig

Initializer = Callable[..., jax.Array]


def normal(stddev: float) -> Initializer:
    return nn.initializers.normal(stddev=stddev)


def matmul(eqn: str, x, w, cfg: ModelConfig):
    """einsum with operands in the compute dtype and float32 accumulation/output.

    bf16 operands + f32 accumulation is ~2x float32 on AVX-512 CPUs and the usual
    mixed precision on GPU/TPU; a bf16 *output* would be slower on CPU and lossier.
    """
    if hasattr(w, "take_rows"):  # int8 weights (gpt_jax.compression.qtensor) are read inside their matmul
        return w.einsum(eqn, x)
    dt = cfg.compute_dtype
    return jnp.einsum(eqn, x.astype(dt), w.astype(dt), preferred_element_type=jnp.float32)


def take_rows(table, ids):
    """jnp.take(table, ids, axis=0), also for an int8 table (gpt_jax.compression.qtensor)."""
    return table.take_rows(ids) if hasattr(table, "take_rows") else jnp.take(table, ids, axis=0)


class Dense(nn.Module):
    """y = x @ W (+ b) over the last axis of x; W is [in, *features]."""

    features: Sequence[int]
    axes: tuple[str | None, ...]  # logical names of the kernel dims: (*in, *features)
    cfg: ModelConfig
    kernel_init: Initializer = normal(0.02)
    use_bias: bool | None = None  # None: cfg.bias

    @nn.compact
    def __call__(self, x):
        features = tuple(self.features)
        shape = (x.shape[-1],) + features
        kernel = self.param(
            "kernel", nn.with_logical_partitioning(self.kernel_init, self.axes), shape, self.cfg.params_dtype
        )
        outs = "abcd"[: len(features)]
        y = matmul(f"...z,z{outs}->...{outs}", x, kernel, self.cfg)
        if self.cfg.bias if self.use_bias is None else self.use_bias:
            bias = self.param(
                "bias",
                nn.with_logical_partitioning(nn.initializers.zeros, self.axes[1:]),
                features,
                self.cfg.params_dtype,
            )
            y = y + bias.astype(jnp.float32)
        return y


class Norm(nn.Module):
    """LayerNorm or RMSNorm, computed in float32."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.cfg
        x = x.astype(jnp.float32)
        scale = self.param(
            "scale", nn.with_logical_partitioning(nn.initializers.ones, ("norm",)), (x.shape[-1],), cfg.params_dtype
        )
        if cfg.norm == "rmsnorm":
            y = x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + cfg.norm_eps)
        else:
            mean = jnp.mean(x, axis=-1, keepdims=True)
            var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
            y = (x - mean) * jax.lax.rsqrt(var + cfg.norm_eps)
        y = y * scale.astype(jnp.float32)
        if cfg.bias and cfg.norm == "layernorm":
            bias = self.param(
                "bias", nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)), (x.shape[-1],), cfg.params_dtype
            )
            y = y + bias.astype(jnp.float32)
        return y


class MLP(nn.Module):
    """GPT-2 GELU MLP or a SwiGLU MLP (LLaMA-style, same hidden width)."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x_BxLxD, deterministic: bool = True):
        cfg = self.cfg
        out_init = normal(0.02 / (2 * cfg.n_layer) ** 0.5)  # GPT-2 scaled residual init
        if cfg.mlp == "swiglu":
            gate = Dense((cfg.ff_dim,), ("embed", "mlp"), cfg, name="gate")(x_BxLxD)
            up = Dense((cfg.ff_dim,), ("embed", "mlp"), cfg, name="up")(x_BxLxD)
            h_BxLxF = nn.silu(gate) * up
        else:
            h_BxLxF = nn.gelu(Dense((cfg.ff_dim,), ("embed", "mlp"), cfg, name="fc")(x_BxLxD), approximate=True)
        h_BxLxF = nn.with_logical_constraint(h_BxLxF, ("batch", "length", "mlp"))
        y = Dense((cfg.n_embd,), ("mlp", "embed"), cfg, kernel_init=out_init, name="proj")(h_BxLxF)
        return nn.Dropout(cfg.dropout)(y, deterministic=deterministic)


def sinusoidal_positions(length: int, dim: int, dtype=jnp.float32) -> jax.Array:
    """Fixed sin/cos table of Vaswani et al. 2017, shape [length, dim]."""
    pos = jnp.arange(length, dtype=jnp.float32)[:, None]
    inv = jnp.exp(-jnp.log(10000.0) * jnp.arange(0, dim, 2, dtype=jnp.float32) / dim)
    table = jnp.zeros((length, dim), jnp.float32)
    table = table.at[:, 0::2].set(jnp.sin(pos * inv))
    table = table.at[:, 1::2].set(jnp.cos(pos * inv[: dim // 2]))
    return table.astype(dtype)


def apply_rope(x_BxHxLxK, positions_BxL, theta: float):
    """Rotary embedding (Su et al. 2021), rotate-half convention as in GPT-NeoX/LLaMA."""
    half = x_BxHxLxK.shape[-1] // 2
    freq = theta ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angle_Bx1xLxK = (positions_BxL[..., None].astype(jnp.float32) * freq)[:, None]
    sin, cos = jnp.sin(angle_Bx1xLxK), jnp.cos(angle_Bx1xLxK)
    x = x_BxHxLxK.astype(jnp.float32)
    x1, x2 = x[..., :half], x[..., half:]
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
