"""Causal multi-head / grouped-query self-attention."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from gpt_jax.config import ModelConfig
from gpt_jax.layers import apply_rope, matmul, normal


def causal_mask(q_len: int, kv_len: int) -> jax.Array:
    """[q_len, kv_len] bool, True where a query may attend (queries are the last q_len keys)."""
    q_pos = jnp.arange(q_len)[:, None] + (kv_len - q_len)
    return q_pos >= jnp.arange(kv_len)[None, :]


def einsum_attention(q_BxHxLxK, k_BxGxSxK, v_BxGxSxK, mask_BxLxS, dtype) -> jax.Array:
    """Reference attention: explicit scores, float32 softmax. Also the fastest path on CPU.

    Heads-first layouts throughout, so XLA needs no transposes between the three einsums.
    """
    b, h, l, d = q_BxHxLxK.shape
    g = k_BxGxSxK.shape[1]
    q_BxGxRxLxK = q_BxHxLxK.reshape(b, g, h // g, l, d) * (d**-0.5)
    s_BxGxRxLxS = jnp.einsum(
        "bgrlk,bgsk->bgrls", q_BxGxRxLxK.astype(dtype), k_BxGxSxK.astype(dtype), preferred_element_type=jnp.float32
    )
    s_BxGxRxLxS = jnp.where(mask_BxLxS[:, None, None], s_BxGxRxLxS, jnp.finfo(jnp.float32).min)
    p_BxGxRxLxS = jax.nn.softmax(s_BxGxRxLxS, axis=-1)
    o_BxGxRxLxK = jnp.einsum(
        "bgrls,bgsk->bgrlk", p_BxGxRxLxS.astype(dtype), v_BxGxSxK.astype(dtype), preferred_element_type=jnp.float32
    )
    return o_BxGxRxLxK.reshape(b, h, l, d)


def dot_product_attention(q_BxHxLxK, k_BxGxSxK, v_BxGxSxK, mask_BxLxS, dtype) -> jax.Array:
    """jax.nn.dot_product_attention: cuDNN flash attention on GPU, XLA's fused path elsewhere."""
    q, k, v = (jnp.swapaxes(t, 1, 2).astype(dtype) for t in (q_BxHxLxK, k_BxGxSxK, v_BxGxSxK))
    out_BxLxHxK = jax.nn.dot_product_attention(q, k, v, mask=mask_BxLxS[:, None])
    return jnp.swapaxes(out_BxLxHxK, 1, 2).astype(jnp.float32)


def resolve_attention(name: str) -> str:
    if name != "auto":
        return name
    return "einsum" if jax.default_backend() == "cpu" else "dot_product"


class HeadsProjection(nn.Module):
    """x_BxLxD -> y_BxHxLxK (heads-first, the layout attention consumes)."""

    cfg: ModelConfig
    heads: int
    axis: str  # logical name of the heads dim: "heads" or "kv_heads"

    @nn.compact
    def __call__(self, x_BxLxD):
        cfg = self.cfg
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(normal(0.02), ("embed", self.axis, "head_dim")),
            (cfg.n_embd, self.heads, cfg.head_dim),
            cfg.params_dtype,
        )
        y_BxHxLxK = matmul("bld,dhk->bhlk", x_BxLxD, kernel, cfg)
        if cfg.bias:
            bias = self.param(
                "bias",
                nn.with_logical_partitioning(nn.initializers.zeros, (self.axis, "head_dim")),
                (self.heads, cfg.head_dim),
                cfg.params_dtype,
            )
            y_BxHxLxK = y_BxHxLxK + bias[:, None, :].astype(jnp.float32)
        return nn.with_logical_constraint(y_BxHxLxK, ("batch", self.axis, "length", "head_dim"))


class CausalSelfAttention(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self, x_BxLxD, positions_BxL, mask_BxLxS, deterministic: bool = True):
        cfg = self.cfg
        q_BxHxLxK = HeadsProjection(cfg, cfg.n_head, "heads", name="query")(x_BxLxD)
        k_BxGxLxK = HeadsProjection(cfg, cfg.kv_heads, "kv_heads", name="key")(x_BxLxD)
        v_BxGxLxK = HeadsProjection(cfg, cfg.kv_heads, "kv_heads", name="value")(x_BxLxD)
        if cfg.pos == "rope":
            q_BxHxLxK = apply_rope(q_BxHxLxK, positions_BxL, cfg.rope_theta)
            k_BxGxLxK = apply_rope(k_BxGxLxK, positions_BxL, cfg.rope_theta)
        attend = einsum_attention if resolve_attention(cfg.attention) == "einsum" else dot_product_attention
        o_BxHxLxK = attend(q_BxHxLxK, k_BxGxLxK, v_BxGxLxK, mask_BxLxS, cfg.compute_dtype)
        o_BxHxLxK = nn.with_logical_constraint(o_BxHxLxK, ("batch", "heads", "length", "head_dim"))
        out_init = normal(0.02 / (2 * cfg.n_layer) ** 0.5)  # GPT-2 scaled residual init
        kernel = self.param(
            "out_kernel",
            nn.with_logical_partitioning(out_init, ("heads", "head_dim", "embed")),
            (cfg.n_head, cfg.head_dim, cfg.n_embd),
            cfg.params_dtype,
        )
        y_BxLxD = matmul("bhlk,hkd->bld", o_BxHxLxK, kernel, cfg)
        if cfg.bias:
            bias = self.param(
                "out_bias",
                nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
                (cfg.n_embd,),
                cfg.params_dtype,
            )
            y_BxLxD = y_BxLxD + bias.astype(jnp.float32)
        return nn.Dropout(cfg.dropout)(y_BxLxD, deterministic=deterministic)
