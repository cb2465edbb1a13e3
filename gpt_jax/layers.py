"""Building blocks: a mixed-precision dense layer, norms, MLPs and positional encodings.

Every parameter carries logical axis names ("embed", "mlp", "heads", ...) that
`gpt_jax.sharding` maps to mesh axes.
"""

from __future__ import annotations

import functools
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


def _norm_stats(x, eps: float, rms: bool):
    """(x_hat, rstd, var + eps) of LayerNorm (rms=False) or RMSNorm over the last axis, as the plain Norm
    computes them (for RMSNorm, "var" is the mean square)."""
    if rms:
        var_eps = jnp.mean(jnp.square(x), axis=-1, keepdims=True) + eps
        rstd = jax.lax.rsqrt(var_eps)
        return x * rstd, rstd, var_eps
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var_eps = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True) + eps
    rstd = jax.lax.rsqrt(var_eps)
    return (x - mean) * rstd, rstd, var_eps


def norm_with_residual(x, scale, bias, eps: float, rms: bool):
    """(x, norm(x) * scale + bias), float32; `bias` may be None. What autodiff differentiates with
    norm_grad="autodiff"; `residual_norm` is the same function with a hand-written backward."""
    return _residual_norm_fwd(x, scale, bias, eps, rms)[0]


residual_norm = functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))(norm_with_residual)
residual_norm.__doc__ = """(x, norm(x) * scale + bias): a norm that also passes its input on (the residual stream).

Forward: `norm_with_residual`, the plain Norm's ops. Backward (hand-written): the cotangent of x is
(g_pass * std + rstd-free LayerNorm gradient) / std, i.e. g_pass + the usual LayerNorm dx, ending in a
division. XLA:CPU's fusion duplicates cheap elementwise producers into every consumer but never an
expensive one (a float divide) that has several users, so the residual stream's cotangent is
materialised once per norm instead of being recomputed, through every later layer's norm backward,
inside each consumer (each weight-gradient dot's operand copy, each bias/scale reduction): a cost that
grows with the square of the depth. Equal to autodiff of the plain Norm up to float rounding.
"""


def _residual_norm_fwd(x, scale, bias, eps, rms):
    x_hat, rstd, var_eps = _norm_stats(x, eps, rms)
    y = x_hat * scale
    out = (x, y if bias is None else y + bias)
    std = var_eps * rstd  # = sqrt(var + eps); a sqrt would not stay a divide (XLA: A / sqrt(B) -> A * rsqrt(B))
    return out, (x_hat, std, scale, bias)


def _residual_norm_bwd(eps, rms, res, cts):
    x_hat, std, scale, bias = res  # bias: None (an empty pytree) or its array, only to say which
    g_pass, g_y = cts
    rows = tuple(range(g_y.ndim - 1))
    d_scale = jnp.sum(g_y * x_hat, axis=rows)
    d_bias = None if bias is None else jnp.sum(g_y, axis=rows)
    g_hat = g_y * scale
    # dx = rstd * (g_hat - mean(g_hat) - x_hat * mean(g_hat * x_hat)); RMSNorm has no mean term.
    num = g_hat - x_hat * jnp.mean(g_hat * x_hat, axis=-1, keepdims=True)
    if not rms:
        num = num - jnp.mean(g_hat, axis=-1, keepdims=True)
    std_full = x_hat * 0.0 + std  # a full-size divisor: XLA rewrites A / broadcast(B) as A * broadcast(1 / B)
    g_x = (g_pass * std + num) / std_full  # = g_pass + num * rstd, ending in a divide: see residual_norm
    return g_x, d_scale, d_bias


residual_norm.defvjp(_residual_norm_fwd, _residual_norm_bwd)


class Norm(nn.Module):
    """LayerNorm or RMSNorm, computed in float32.

    `Norm(cfg)(x)` -> norm(x); `Norm(cfg)(x, residual=True)` -> (x as float32, norm(x)), for a pre-norm
    block whose residual stream goes on from x: with `cfg.norm_grad == "custom"` both come from
    `residual_norm` (one hand-written backward for the norm and the residual fan-out), else from autodiff.
    """

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x, residual: bool = False):
        cfg = self.cfg
        x = x.astype(jnp.float32)
        scale = self.param(
            "scale", nn.with_logical_partitioning(nn.initializers.ones, ("norm",)), (x.shape[-1],), cfg.params_dtype
        )
        bias = None
        if cfg.bias and cfg.norm == "layernorm":
            bias = self.param(
                "bias", nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)), (x.shape[-1],), cfg.params_dtype
            ).astype(jnp.float32)
        scale = scale.astype(jnp.float32)
        norm = residual_norm if cfg.norm_grad == "custom" else norm_with_residual
        x, y = norm(x, scale, bias, cfg.norm_eps, cfg.norm == "rmsnorm")
        return (x, y) if residual else y


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
