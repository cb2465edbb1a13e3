"""Causal multi-head / grouped-query self-attention."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from gpt_jax.config import ModelConfig
from gpt_jax.kv_cache import K_AXES, V_AXES
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


def cached_attention(q_BxHxLxK, k_BxGxLxK, v_BxGxLxK, kt_BxGxKxS, v_BxGxSxK, mask_BxLxT, dtype) -> jax.Array:
    """Attention over the S cached slots, then the L new tokens (mask_BxLxT, T = S + L), one softmax.

    Reads the cache as it was before this call: keys are cached transposed, so both matmuls read
    the cache as stored, and the write comes after (write_cache).
    """
    b, h, l, d = q_BxHxLxK.shape
    g, s = k_BxGxLxK.shape[1], v_BxGxSxK.shape[2]
    f32 = jnp.float32
    q_BxGxRxLxK = (q_BxHxLxK.reshape(b, g, h // g, l, d) * (d**-0.5)).astype(dtype)
    old_BxGxRxLxS = jnp.einsum("bgrlk,bgks->bgrls", q_BxGxRxLxK, kt_BxGxKxS.astype(dtype), preferred_element_type=f32)
    new_BxGxRxLxL = jnp.einsum("bgrlk,bgtk->bgrlt", q_BxGxRxLxK, k_BxGxLxK.astype(dtype), preferred_element_type=f32)
    s_BxGxRxLxT = jnp.concatenate([old_BxGxRxLxS, new_BxGxRxLxL], axis=-1)
    s_BxGxRxLxT = jnp.where(mask_BxLxT[:, None, None], s_BxGxRxLxT, jnp.finfo(f32).min)
    p_BxGxRxLxT = jax.nn.softmax(s_BxGxRxLxT, axis=-1).astype(dtype)
    o_BxGxRxLxK = jnp.einsum(
        "bgrls,bgsk->bgrlk", p_BxGxRxLxT[..., :s], v_BxGxSxK.astype(dtype), preferred_element_type=f32
    )
    o_BxGxRxLxK += jnp.einsum(
        "bgrlt,bgtk->bgrlk", p_BxGxRxLxT[..., s:], v_BxGxLxK.astype(dtype), preferred_element_type=f32
    )
    return o_BxGxRxLxK.reshape(b, h, l, d)


def write_cache(kv, k_BxGxLxK, v_BxGxLxK, index, o_BxHxLxK):
    """(kt_BxGxKxS, v_BxGxSxK) with the L new keys/values at slots [index, index + L).

    The write is made to depend on the attention output (adding 0 * o, which XLA does not fold for
    floats), so it is ordered after every read of the cache: XLA then updates the cache in place
    instead of copying all of it every step.
    """
    after_Bx1xLx1 = 0.0 * o_BxHxLxK[:, :1, :, :1]
    kt_BxGxLxK = jnp.swapaxes(k_BxGxLxK + after_Bx1xLx1, 2, 3).astype(kv[0].dtype)
    kt_BxGxKxS = jax.lax.dynamic_update_slice(kv[0], kt_BxGxLxK, (0, 0, 0, index))
    v_BxGxSxK = jax.lax.dynamic_update_slice(kv[1], (v_BxGxLxK + after_Bx1xLx1).astype(kv[1].dtype), (0, 0, index, 0))
    return nn.with_logical_constraint(kt_BxGxKxS, K_AXES), nn.with_logical_constraint(v_BxGxSxK, V_AXES)


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
        b, l, d = x_BxLxD.shape
        if l == 1:  # decoding: the same products as a plain [B, D] @ [D, H*K], which XLA's CPU backend
            # runs on the kernel as stored (the einsum form relayouts the kernel on every call)
            y_BxHxLxK = matmul("bd,dn->bn", x_BxLxD[:, 0], kernel.reshape(d, -1), cfg).reshape(b, self.heads, 1, -1)
        else:
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
    """Returns y_BxLxD; with `kv` (this layer's cache, see gpt_jax.kv_cache) also the updated kv.

    mask_BxLxT: without a cache T = L. With one, T = S + L (the S cached slots, then the L new
    tokens) or T = L when nothing is cached before (a prefill). The new keys/values go to slots
    [index, index + L).
    """

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x_BxLxD, positions_BxL, mask_BxLxT, deterministic: bool = True, kv=None, index=None):
        cfg = self.cfg
        q_BxHxLxK = HeadsProjection(cfg, cfg.n_head, "heads", name="query")(x_BxLxD)
        k_BxGxLxK = HeadsProjection(cfg, cfg.kv_heads, "kv_heads", name="key")(x_BxLxD)
        v_BxGxLxK = HeadsProjection(cfg, cfg.kv_heads, "kv_heads", name="value")(x_BxLxD)
        if cfg.pos == "rope":
            q_BxHxLxK = apply_rope(q_BxHxLxK, positions_BxL, cfg.rope_theta)
            k_BxGxLxK = apply_rope(k_BxGxLxK, positions_BxL, cfg.rope_theta)
        attend = einsum_attention if resolve_attention(cfg.attention) == "einsum" else dot_product_attention
        if kv is None or mask_BxLxT.shape[-1] == x_BxLxD.shape[1]:  # no cache, or nothing cached yet
            o_BxHxLxK = attend(q_BxHxLxK, k_BxGxLxK, v_BxGxLxK, mask_BxLxT, cfg.compute_dtype)
        else:
            o_BxHxLxK = cached_attention(q_BxHxLxK, k_BxGxLxK, v_BxGxLxK, *kv, mask_BxLxT, cfg.compute_dtype)
        if kv is not None:
            kv = write_cache(kv, k_BxGxLxK, v_BxGxLxK, index, o_BxHxLxK)
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
        y_BxLxD = nn.Dropout(cfg.dropout)(y_BxLxD, deterministic=deterministic)
        return y_BxLxD if kv is None else (y_BxLxD, kv)
