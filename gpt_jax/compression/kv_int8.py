"""An int8 KV cache for decoding: keys and values stored as int8 with one float32 scale per (row, head,
token) (symmetric absmax over head_dim), dequantized where attention reads them. A quarter of the float32
cache's bytes (plus 4 bytes of scale per head and token), which is what long-context decoding reads.

Selected by the model config the decode program is compiled for: `with_int8_kv(cfg)` is `cfg` whose
`init_kv` builds this cache (gpt_jax.kv_cache.init_cache's hook); attention writes new tokens through
`Int8KV.write` (gpt_jax.kv_cache.update_slice's hook) and reads them with `astype`.
"""

from __future__ import annotations

import dataclasses

import flax
import jax
import jax.numpy as jnp

from gpt_jax.config import ModelConfig


@flax.struct.dataclass
class Int8KV:
    q: jax.Array  # int8 in the float cache's layout: keys [B, G, K, S] (transposed), values [B, G, S, K]
    scale: jax.Array  # float32, the same with head_dim (`axis`) of size 1
    axis: int = flax.struct.field(pytree_node=False, default=3)

    @property
    def shape(self):
        return self.q.shape

    @property
    def dtype(self):
        return jnp.dtype(jnp.float32)  # what it stands for: new tokens arrive as float

    def astype(self, dtype):
        return (self.q.astype(jnp.float32) * self.scale).astype(dtype)

    def write(self, x_new, start):
        """The cache with float `x_new` quantized (per token and head) into the slots at `start`."""
        q, scale = quantize(x_new.astype(jnp.float32), self.axis)
        return self.replace(
            q=jax.lax.dynamic_update_slice(self.q, q, start),
            scale=jax.lax.dynamic_update_slice(self.scale, scale, start),
        )


def quantize(x, axis: int):
    """(int8 x / scale, scale) with scale = max |x| / 127 over `axis` (1 where all zero)."""
    scale = jnp.max(jnp.abs(x), axis=axis, keepdims=True) / 127.0
    scale = jnp.where(scale == 0, 1.0, scale)
    return jnp.clip(jnp.round(x / scale), -127, 127).astype(jnp.int8), scale


def init_int8_cache(cfg: ModelConfig, batch: int, length: int):
    from gpt_jax.kv_cache import KVCache  # lazy: kv_cache calls back into this module through cfg.init_kv

    if cfg.scan_layers:
        raise ValueError("the int8 KV cache supports unstacked layers: use model.scan_layers=False")
    g, k = cfg.kv_heads, cfg.head_dim

    def empty(shape, axis):
        scale_shape = tuple(1 if i == axis else s for i, s in enumerate(shape))
        return Int8KV(jnp.zeros(shape, jnp.int8), jnp.ones(scale_shape, jnp.float32), axis)

    keys = tuple(empty((batch, g, k, length), 2) for _ in range(cfg.n_layer))
    values = tuple(empty((batch, g, length, k), 3) for _ in range(cfg.n_layer))
    return KVCache(k=keys, v=values, index=jnp.zeros((), jnp.int32))


@dataclasses.dataclass(frozen=True)
class Int8KVConfig(ModelConfig):
    """A ModelConfig whose decode programs keep an int8 KV cache (same params, same architecture)."""

    def init_kv(self, batch: int, length: int):
        return init_int8_cache(self, batch, length)


def with_int8_kv(cfg: ModelConfig) -> ModelConfig:
    return Int8KVConfig(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(ModelConfig)})


def for_flag(cfg, kv_int8: bool):
    """The model config `sample`/`chat --kv_int8` decode with; one-line errors where the cache cannot apply."""
    if not kv_int8:
        return cfg
    if type(cfg) is not ModelConfig:  # a ViT/VLM config, or a PEFT run's ExtendedConfig (its modules would drop)
        raise ValueError(
            f"--kv_int8 applies to GPT text runs; this run's model config is a {type(cfg).__name__}: drop --kv_int8"
        )
    if cfg.scan_layers:
        raise ValueError("--kv_int8 needs unstacked layers and this run has model.scan_layers=True: drop --kv_int8")
    return with_int8_kv(cfg)
