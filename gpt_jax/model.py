"""Decoder-only GPT (GPT-2 layout by default: pre-LayerNorm, learned positions, GELU, tied head)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from gpt_jax.attention import CausalSelfAttention, causal_mask
from gpt_jax.config import ModelConfig
from gpt_jax.layers import MLP, Norm, matmul, normal, sinusoidal_positions, take_rows

EMBED_STD = 0.02  # GPT-2's token/position embedding init


@dataclasses.dataclass(frozen=True)
class Extensions:
    """Modules a wrapper adds to every layer (gpt_jax.peft builds them); the GPT only knows where they go.

    sublayer(cfg, name) -> a module y_BxLxD -> y_BxLxD applied to the output of sublayer `name` ("attn",
      then "mlp") of every block, before its residual add.
    kv_prefix(cfg) -> a module () -> (k_GxPxK, v_GxPxK) float32: P extra key/value slots every query of
      the layer attends, before the real keys (they carry no position and are never cached).
    The factories run inside the block/attention, so the module they build (and name) sits there in the
    param tree. They must be hashable values (frozen dataclasses): configs are jit static arguments.
    """

    sublayer: Callable[[ModelConfig, str], nn.Module] | None = None
    kv_prefix: Callable[[ModelConfig], nn.Module] | None = None


NO_EXTENSIONS = Extensions()


class ExtendedConfig(ModelConfig):
    """A ModelConfig carrying Extensions: what `GPT(cfg)` builds when a wrapper (gpt_jax.peft) adds modules.

    The extensions are not dataclass fields: the architecture (`dataclasses.fields` / `asdict`, what
    model_config.json holds and a resume compares) stays the base's, and the wrapper rebuilds its
    modules from its own config. Equality, hashing, `replace` and repr include them.
    """

    def __init__(self, base: ModelConfig, extensions: Extensions):
        super().__init__(**dataclasses.asdict(base))  # validates as a ModelConfig
        object.__setattr__(self, "extensions", extensions)

    def base(self) -> ModelConfig:
        return ModelConfig(**dataclasses.asdict(self))

    def replace(self, **kw) -> ExtendedConfig:
        return ExtendedConfig(self.base().replace(**kw), self.extensions)

    def __eq__(self, other):
        return type(other) is ExtendedConfig and (self.base(), self.extensions) == (other.base(), other.extensions)

    def __hash__(self):
        return hash((self.base(), self.extensions))

    def __repr__(self):
        return f"ExtendedConfig({self.base()!r}, {self.extensions!r})"


def extensions_of(cfg: ModelConfig) -> Extensions:
    return cfg.extensions if isinstance(cfg, ExtendedConfig) else NO_EXTENSIONS


def extend(cfg: ModelConfig, **slots) -> ExtendedConfig:
    """`cfg` with the Extensions slots given (sublayer=..., kv_prefix=...) set, the others kept."""
    base = cfg.base() if isinstance(cfg, ExtendedConfig) else cfg
    return ExtendedConfig(base, dataclasses.replace(extensions_of(cfg), **slots))


class Block(nn.Module):
    cfg: ModelConfig
    ext: Extensions = NO_EXTENSIONS

    @nn.compact
    def __call__(self, x_BxLxD, positions_BxL, mask_BxLxS, deterministic: bool = True, kv=None, index=None):
        cfg, ext = self.cfg, self.ext
        x_BxLxD = nn.with_logical_constraint(x_BxLxD, ("batch", "length", "embed"))
        x_BxLxD, h = Norm(cfg, name="ln_1")(x_BxLxD, residual=True)
        attn = CausalSelfAttention(cfg, ext.kv_prefix, name="attn")
        if kv is None:
            y_BxLxD = attn(h, positions_BxL, mask_BxLxS, deterministic)
        else:
            y_BxLxD, kv = attn(h, positions_BxL, mask_BxLxS, deterministic, kv, index)
        if ext.sublayer is not None:
            y_BxLxD = ext.sublayer(cfg, "attn")(y_BxLxD)
        x_BxLxD = x_BxLxD + y_BxLxD
        x_BxLxD, h = Norm(cfg, name="ln_2")(x_BxLxD, residual=True)
        y_BxLxD = MLP(cfg, name="mlp")(h, deterministic)
        if ext.sublayer is not None:
            y_BxLxD = ext.sublayer(cfg, "mlp")(y_BxLxD)
        x_BxLxD = x_BxLxD + y_BxLxD
        return x_BxLxD if kv is None else (x_BxLxD, kv)


class ScannedBlock(nn.Module):
    """Block with the (carry, x) -> (carry, y) signature nn.scan wants."""

    cfg: ModelConfig
    ext: Extensions = NO_EXTENSIONS

    @nn.compact
    def __call__(self, x_BxLxD, positions_BxL, mask_BxLxS, deterministic: bool, kv=None, index=None):
        out = Block(self.cfg, self.ext, name="block")(x_BxLxD, positions_BxL, mask_BxLxS, deterministic, kv, index)
        return out if kv is not None else (out, None)  # with a cache: (x, this layer's updated kv)


def _remat(module_cls, policy: str, static_argnums):
    if policy == "none":
        return module_cls
    checkpoint_policy = None if policy == "full" else jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims
    return nn.remat(module_cls, policy=checkpoint_policy, prevent_cse=False, static_argnums=static_argnums)


class GPT(nn.Module):
    """`GPT(cfg).apply({'params': p}, ids_BxL) -> logits_BxLxV` (float32, eval mode by default).

    Decoding: pass `cache` (gpt_jax.kv_cache.KVCache), positions and a mask over [cached slots, new
    tokens] (see CausalSelfAttention); returns (logits, updated cache). Without positions/mask the
    rows are taken as unpadded and continuing at slot cache.index. `last_only` computes the logits of
    the last position only (a prefill needs no others). `features` returns the final hidden states
    x_BxLxD (after ln_f, float32) instead of logits, for task heads. `embeds_BxLxD` replaces the token
    embedding lookup of `ids_BxL` (positions are still added); `token_embeds` returns the lookup alone
    (gpt_jax.models.vlm mixes image tokens into it).

    Attention maps: `apply(..., mutable=['intermediates'])` (no cache) also returns, per layer,
    intermediates/h_{i}/attn/attention_weights = (p_BxHxLxS,) (float32; with kv_prefix extensions the
    first P key columns are their slots); with scan_layers, h/block/attn/attention_weights with a
    leading layer axis.

    `cfg` may be an ExtendedConfig: its Extensions are built into every block.
    """

    cfg: ModelConfig

    @nn.compact
    def __call__(
        self,
        ids_BxL,
        positions_BxL=None,
        mask_BxLxS=None,
        deterministic: bool = True,
        cache=None,
        last_only=False,
        features: bool = False,
        embeds_BxLxD=None,
        token_embeds: bool = False,
    ):
        cfg, ext = self.cfg, extensions_of(self.cfg)
        chex.assert_rank(ids_BxL, 2)  # trace-time: a clear error for a 1-D prompt or float "ids"
        chex.assert_type(ids_BxL, int)
        b, l = ids_BxL.shape
        if positions_BxL is not None:
            chex.assert_equal_shape([ids_BxL, positions_BxL])
        if l > cfg.block_size and cfg.pos == "learned":
            raise ValueError(f"sequence length {l} exceeds model.block_size={cfg.block_size}; crop the input")
        start = 0 if cache is None else cache.index  # unpadded rows: positions are cache slots
        if positions_BxL is None:
            positions_BxL = jnp.broadcast_to(start + jnp.arange(l, dtype=jnp.int32), (b, l))
        if mask_BxLxS is None and cache is None:
            mask_BxLxS = jnp.broadcast_to(causal_mask(l, l), (b, l, l))
        elif mask_BxLxS is None:  # the filled slots, then causal over the new tokens
            filled_LxS = jnp.broadcast_to(jnp.arange(cache.length)[None] < start, (l, cache.length))
            mask_BxLxS = jnp.broadcast_to(jnp.concatenate([filled_LxS, causal_mask(l, l)], 1), (b, l, cache.length + l))

        wte = self.param(
            "wte",
            nn.with_logical_partitioning(normal(EMBED_STD), ("vocab", "embed")),
            (cfg.vocab_size, cfg.n_embd),
            cfg.params_dtype,
        )
        if token_embeds:  # the token embeddings alone: a multimodal model puts image tokens among them
            return take_rows(wte, ids_BxL).astype(jnp.float32)
        x_BxLxD = take_rows(wte, ids_BxL) if embeds_BxLxD is None else embeds_BxLxD
        x_BxLxD = x_BxLxD.astype(jnp.float32)
        if cfg.pos == "learned":
            wpe = self.param(
                "wpe",
                nn.with_logical_partitioning(normal(EMBED_STD), (None, "embed")),
                (cfg.block_size, cfg.n_embd),
                cfg.params_dtype,
            )
            x_BxLxD = x_BxLxD + take_rows(wpe, positions_BxL).astype(jnp.float32)
        elif cfg.pos == "sinusoidal":
            # At the scale a learned table starts at (RMS 0.02): a unit-amplitude table is 35x the token
            # embeddings and swamps them (experiments/results/positions.md).
            table = sinusoidal_positions(cfg.block_size, cfg.n_embd) * (EMBED_STD * 2**0.5)
            x_BxLxD = x_BxLxD + jnp.take(table, positions_BxL, axis=0)
        x_BxLxD = nn.Dropout(cfg.dropout)(x_BxLxD, deterministic=deterministic)

        if cfg.scan_layers:
            cached = (0, nn.broadcast) if cache is not None else ()  # the cache is scanned over its layer axis
            stack = nn.scan(
                _remat(ScannedBlock, cfg.remat, static_argnums=(4,)),
                variable_axes={"params": 0, "intermediates": 0},  # per-layer attention maps stack too
                split_rngs={"params": True, "dropout": True},
                in_axes=(nn.broadcast, nn.broadcast, nn.broadcast) + cached,
                length=cfg.n_layer,
                metadata_params={nn.PARTITION_NAME: "layers"},
            )
            args = ((cache.k, cache.v), cache.index) if cache is not None else ()
            x_BxLxD, kv = stack(cfg, ext, name="h")(x_BxLxD, positions_BxL, mask_BxLxS, deterministic, *args)
            if cache is not None:
                cache = cache.replace(k=kv[0], v=kv[1])
        else:
            block_cls = _remat(Block, cfg.remat, static_argnums=(4,))
            ks, vs = [], []
            for i in range(cfg.n_layer):
                block = block_cls(cfg, ext, name=f"h_{i}")
                if cache is None:
                    x_BxLxD = block(x_BxLxD, positions_BxL, mask_BxLxS, deterministic)
                else:
                    x_BxLxD, (k, v) = block(
                        x_BxLxD, positions_BxL, mask_BxLxS, deterministic, (cache.k[i], cache.v[i]), cache.index
                    )
                    ks.append(k)
                    vs.append(v)
            if cache is not None:
                cache = cache.replace(k=tuple(ks), v=tuple(vs))

        if last_only:
            x_BxLxD = x_BxLxD[:, -1:]
        x_BxLxD = Norm(cfg, name="ln_f")(x_BxLxD)
        if features:
            x_BxLxD = nn.with_logical_constraint(x_BxLxD, ("batch", "length", "embed"))
            return x_BxLxD if cache is None else (x_BxLxD, cache.replace(index=cache.index + l))
        if cfg.tie_embeddings:
            logits_BxLxV = matmul("bld,vd->blv", x_BxLxD, wte, cfg)
        else:
            head = self.param(
                "lm_head",
                nn.with_logical_partitioning(normal(0.02), ("embed", "vocab")),
                (cfg.n_embd, cfg.vocab_size),
                cfg.params_dtype,
            )
            logits_BxLxV = matmul("bld,dv->blv", x_BxLxD, head, cfg)
        logits_BxLxV = nn.with_logical_constraint(logits_BxLxV, ("batch", "length", "vocab"))
        if cache is None:
            return logits_BxLxV
        return logits_BxLxV, cache.replace(index=cache.index + l)


def init_params(cfg: ModelConfig, rng, batch: int = 1, length: int | None = None):
    """Boxed (logically partitioned) params; use `jax.eval_shape` on it to count without allocating."""
    ids = jnp.zeros((batch, length or min(cfg.block_size, 8)), jnp.int32)
    return GPT(cfg).init({"params": rng}, ids)["params"]


def count_params(params) -> int:
    return sum(math.prod(x.shape) for x in jax.tree.leaves(nn.meta.unbox(params)))
