"""Causal multi-head / grouped-query self-attention."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from gpt_jax.attention_kernels import KERNELS, check_kernel, fused_attention
from gpt_jax.config import ModelConfig
from gpt_jax.kv_cache import K_AXES, V_AXES, update_slice
from gpt_jax.layers import apply_rope, matmul, normal


def causal_mask(q_len: int, kv_len: int) -> jax.Array:
    """[q_len, kv_len] bool, True where a query may attend (queries are the last q_len keys)."""
    q_pos = jnp.arange(q_len)[:, None] + (kv_len - q_len)
    return q_pos >= jnp.arange(kv_len)[None, :]


def einsum_attention(q_BxHxLxK, k_BxGxSxK, v_BxGxSxK, mask_BxLxS, dtype, return_weights: bool = False):
    """Reference attention: explicit scores, float32 softmax. Also the fastest path on CPU.

    Heads-first layouts throughout, so XLA needs no transposes between the three einsums.
    return_weights: also return the probabilities p_BxHxLxS (float32).
    """
    b, h, l, d = q_BxHxLxK.shape
    g = k_BxGxSxK.shape[1]
    q_BxGxRxLxK = q_BxHxLxK.reshape(b, g, h // g, l, d) * (d**-0.5)
    s_BxGxRxLxS = jnp.einsum(
        "bgrlk,bgsk->bgrls", q_BxGxRxLxK.astype(dtype), k_BxGxSxK.astype(dtype), preferred_element_type=jnp.float32
    )
    # The mask and softmax on the 4-D [B, H, L, S] view (a free reshape): XLA:CPU's reductions over a 5-D
    # array with a size-1 axis (no grouping, R = 1) run ~10x slower than the same reductions in 4-D.
    s_BxHxLxS = s_BxGxRxLxS.reshape(b, h, l, -1)
    s_BxHxLxS = jnp.where(mask_BxLxS[:, None], s_BxHxLxS, jnp.finfo(jnp.float32).min)
    p_BxGxRxLxS = jax.nn.softmax(s_BxHxLxS, axis=-1).reshape(s_BxGxRxLxS.shape)
    o_BxGxRxLxK = jnp.einsum(
        "bgrls,bgsk->bgrlk", p_BxGxRxLxS.astype(dtype), v_BxGxSxK.astype(dtype), preferred_element_type=jnp.float32
    )
    o_BxHxLxK = o_BxGxRxLxK.reshape(b, h, l, d)
    if return_weights:
        return o_BxHxLxK, p_BxGxRxLxS.reshape(b, h, l, -1)
    return o_BxHxLxK


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
    kt_BxGxKxS = update_slice(kv[0], kt_BxGxLxK, (0, 0, 0, index))
    v_BxGxSxK = update_slice(kv[1], (v_BxGxLxK + after_Bx1xLx1).astype(kv[1].dtype), (0, 0, index, 0))
    return nn.with_logical_constraint(kt_BxGxKxS, K_AXES), nn.with_logical_constraint(v_BxGxSxK, V_AXES)


def with_prefix(k_BxGxLxK, v_BxGxLxK, mask_BxLxT, pk_GxPxK, pv_GxPxK, at: int):
    """The P prefix slots put before the new keys/values, and as P always-True mask columns at `at`
    (0 without a cache; S, between the cached slots and the new tokens, with one)."""
    b = k_BxGxLxK.shape[0]
    expand = lambda p_GxPxK, x: jnp.broadcast_to(p_GxPxK.astype(x.dtype)[None], (b, *p_GxPxK.shape))
    k_BxGxQxK = jnp.concatenate([expand(pk_GxPxK, k_BxGxLxK), k_BxGxLxK], axis=2)
    v_BxGxQxK = jnp.concatenate([expand(pv_GxPxK, v_BxGxLxK), v_BxGxLxK], axis=2)
    l, p = mask_BxLxT.shape[1], pk_GxPxK.shape[1]
    always_BxLxP = jnp.ones((b, l, p), bool)
    mask_BxLxU = jnp.concatenate([mask_BxLxT[..., :at], always_BxLxP, mask_BxLxT[..., at:]], axis=-1)
    return k_BxGxQxK, v_BxGxQxK, mask_BxLxU


def resolve_attention(name: str, dtype=jnp.float32) -> str:
    """The attention path for model.attention=name. A kernel this backend cannot run takes auto's path with a
    warning (a run trained on a TPU still samples on CPU); the trainer refuses it up front (check_kernel)."""
    backend = jax.default_backend()
    if name in KERNELS:
        try:
            check_kernel(name, backend, dtype)
        except ValueError as e:
            warnings.warn(f"{e}; using model.attention=auto here", stacklevel=2)
            name = "auto"
    if name == "auto":
        if backend == "cpu":
            return "einsum"
        half = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
        return "cudnn" if backend == "gpu" and half else "dot_product"
    return name


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
    # () -> (k_GxPxK, v_GxPxK): extra key/value slots every query attends (gpt_jax.model.Extensions)
    kv_prefix: Callable[[ModelConfig], nn.Module] | None = None

    @nn.compact
    def __call__(self, x_BxLxD, positions_BxL, mask_BxLxT, deterministic: bool = True, kv=None, index=None):
        cfg = self.cfg
        q_BxHxLxK = HeadsProjection(cfg, cfg.n_head, "heads", name="query")(x_BxLxD)
        k_BxGxLxK = HeadsProjection(cfg, cfg.kv_heads, "kv_heads", name="key")(x_BxLxD)
        v_BxGxLxK = HeadsProjection(cfg, cfg.kv_heads, "kv_heads", name="value")(x_BxLxD)
        if cfg.pos == "rope":
            q_BxHxLxK = apply_rope(q_BxHxLxK, positions_BxL, cfg.rope_theta)
            k_BxGxLxK = apply_rope(k_BxGxLxK, positions_BxL, cfg.rope_theta)
        fresh = kv is None or mask_BxLxT.shape[-1] == x_BxLxD.shape[1]  # no cache, or nothing cached yet
        ks_BxGxQxK, vs_BxGxQxK, mask_BxLxU = k_BxGxLxK, v_BxGxLxK, mask_BxLxT  # the keys attended, with the prefix
        if self.kv_prefix is not None:
            at = 0 if fresh else mask_BxLxT.shape[-1] - x_BxLxD.shape[1]
            ks_BxGxQxK, vs_BxGxQxK, mask_BxLxU = with_prefix(
                k_BxGxLxK, v_BxGxLxK, mask_BxLxT, *self.kv_prefix(cfg)(), at
            )
        # Attention maps (gpt_jax.analysis.attention_maps): only when the caller made 'intermediates' mutable,
        # and then on the einsum path whatever cfg.attention says (fused kernels never form them).
        sow = kv is None and self.is_mutable_collection("intermediates")
        path = resolve_attention(cfg.attention, cfg.compute_dtype)
        if fresh and (sow or path == "einsum"):
            o_BxHxLxK = einsum_attention(
                q_BxHxLxK, ks_BxGxQxK, vs_BxGxQxK, mask_BxLxU, cfg.compute_dtype, return_weights=sow
            )
            if sow:  # p_BxHxLxU: keys = [prefix slots, real keys]
                o_BxHxLxK, p_BxHxLxU = o_BxHxLxK
                self.sow("intermediates", "attention_weights", p_BxHxLxU)
        elif fresh and path in KERNELS:  # gpt_jax.attention_kernels; dot_product where a kernel does not apply
            o_BxHxLxK = fused_attention(
                path, q_BxHxLxK, ks_BxGxQxK, vs_BxGxQxK, mask_BxLxU, cfg.compute_dtype, dot_product_attention
            )
        elif fresh:
            o_BxHxLxK = dot_product_attention(q_BxHxLxK, ks_BxGxQxK, vs_BxGxQxK, mask_BxLxU, cfg.compute_dtype)
        else:  # the prefix rides with the new tokens: they are not cached, the cache stays real keys only
            o_BxHxLxK = cached_attention(q_BxHxLxK, ks_BxGxQxK, vs_BxGxQxK, *kv, mask_BxLxU, cfg.compute_dtype)
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
