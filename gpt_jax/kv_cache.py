"""The decoding KV cache: an explicit pytree passed to `GPT.__call__(..., cache=)` and returned updated.

Per layer, heads-first: values [B, G, S, K] and keys transposed, [B, G, K, S], so both attention
matmuls read the cache in place (no per-step relayout copies). Stored in the compute dtype, which
attention casts k/v to anyway. With `scan_layers` the layers are stacked on a leading axis, as
nn.scan wants them.
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp

from gpt_jax.config import ModelConfig

# Logical axis names (gpt_jax.sharding maps them to the mesh).
K_AXES = ("batch", "kv_heads", "head_dim", "length")
V_AXES = ("batch", "kv_heads", "length", "head_dim")


@flax.struct.dataclass
class KVCache:
    k: Any  # tuple of n_layer [B, G, K, S] arrays, or one [N, B, G, K, S] array with scan_layers
    v: Any  # the same with [B, G, S, K]
    index: jax.Array  # int32 scalar: the slot the next call's first token is written to

    @property
    def length(self) -> int:
        return jax.tree.leaves(self.v)[0].shape[-2]


def init_cache(cfg: ModelConfig, batch: int, length: int) -> KVCache:
    if hasattr(cfg, "init_kv"):  # another cache layout (gpt_jax.compression.kv_int8: int8 + scales)
        return cfg.init_kv(batch, length)

    def zeros(shape):
        if cfg.scan_layers:
            return jnp.zeros((cfg.n_layer, *shape), cfg.compute_dtype)
        return tuple(jnp.zeros(shape, cfg.compute_dtype) for _ in range(cfg.n_layer))

    g, k = cfg.kv_heads, cfg.head_dim
    return KVCache(k=zeros((batch, g, k, length)), v=zeros((batch, g, length, k)), index=jnp.zeros((), jnp.int32))


def update_slice(cached, new, start):
    """jax.lax.dynamic_update_slice, also into a quantized cache (one with `write`)."""
    return cached.write(new, start) if hasattr(cached, "write") else jax.lax.dynamic_update_slice(cached, new, start)


def reorder(cache: KVCache, rows_B: jax.Array) -> KVCache:
    """Gather batch rows (beam search: each surviving beam takes its parent's keys/values)."""
    axis = 1 if isinstance(cache.k, jax.Array) and cache.k.ndim == 5 else 0
    take = lambda x: jnp.take(x, rows_B, axis=axis)
    return cache.replace(k=jax.tree.map(take, cache.k), v=jax.tree.map(take, cache.v))


def repeat(cache: KVCache, n: int) -> KVCache:
    """Each row n times in a row (beam search: B prompts -> B*n beams)."""
    axis = 1 if isinstance(cache.k, jax.Array) and cache.k.ndim == 5 else 0
    rep = lambda x: jnp.repeat(x, n, axis=axis)
    return cache.replace(k=jax.tree.map(rep, cache.k), v=jax.tree.map(rep, cache.v))
