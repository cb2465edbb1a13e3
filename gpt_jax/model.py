"""Decoder-only GPT (GPT-2 layout by default: pre-LayerNorm, learned positions, GELU, tied head)."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from gpt_jax.attention import CausalSelfAttention, causal_mask
from gpt_jax.config import ModelConfig
from gpt_jax.layers import MLP, Norm, matmul, normal, sinusoidal_positions


class Block(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self, x_BxLxD, positions_BxL, mask_BxLxS, deterministic: bool = True):
        x_BxLxD = nn.with_logical_constraint(x_BxLxD, ("batch", "length", "embed"))
        h = Norm(self.cfg, name="ln_1")(x_BxLxD)
        x_BxLxD = x_BxLxD + CausalSelfAttention(self.cfg, name="attn")(h, positions_BxL, mask_BxLxS, deterministic)
        h = Norm(self.cfg, name="ln_2")(x_BxLxD)
        x_BxLxD = x_BxLxD + MLP(self.cfg, name="mlp")(h, deterministic)
        return x_BxLxD


class ScannedBlock(nn.Module):
    """Block with the (carry, x) -> (carry, y) signature nn.scan wants."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x_BxLxD, positions_BxL, mask_BxLxS, deterministic: bool):
        return Block(self.cfg, name="block")(x_BxLxD, positions_BxL, mask_BxLxS, deterministic), None


def _remat(module_cls, policy: str, static_argnums):
    if policy == "none":
        return module_cls
    checkpoint_policy = None if policy == "full" else jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims
    return nn.remat(module_cls, policy=checkpoint_policy, prevent_cse=False, static_argnums=static_argnums)


class GPT(nn.Module):
    """`GPT(cfg).apply({'params': p}, ids_BxL) -> logits_BxLxV` (float32, eval mode by default)."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, ids_BxL, positions_BxL=None, mask_BxLxS=None, deterministic: bool = True):
        cfg = self.cfg
        b, l = ids_BxL.shape
        if l > cfg.block_size and cfg.pos == "learned":
            raise ValueError(f"sequence length {l} exceeds model.block_size={cfg.block_size}; crop the input")
        if positions_BxL is None:
            positions_BxL = jnp.broadcast_to(jnp.arange(l, dtype=jnp.int32), (b, l))
        if mask_BxLxS is None:
            mask_BxLxS = jnp.broadcast_to(causal_mask(l, l), (b, l, l))

        wte = self.param(
            "wte",
            nn.with_logical_partitioning(normal(0.02), ("vocab", "embed")),
            (cfg.vocab_size, cfg.n_embd),
            cfg.params_dtype,
        )
        x_BxLxD = jnp.take(wte, ids_BxL, axis=0).astype(jnp.float32)
        if cfg.pos == "learned":
            wpe = self.param(
                "wpe",
                nn.with_logical_partitioning(normal(0.02), (None, "embed")),
                (cfg.block_size, cfg.n_embd),
                cfg.params_dtype,
            )
            x_BxLxD = x_BxLxD + jnp.take(wpe, positions_BxL, axis=0).astype(jnp.float32)
        elif cfg.pos == "sinusoidal":
            table = sinusoidal_positions(cfg.block_size, cfg.n_embd)
            x_BxLxD = x_BxLxD + jnp.take(table, positions_BxL, axis=0)
        x_BxLxD = nn.Dropout(cfg.dropout)(x_BxLxD, deterministic=deterministic)

        if cfg.scan_layers:
            stack = nn.scan(
                _remat(ScannedBlock, cfg.remat, static_argnums=(4,)),
                variable_axes={"params": 0},
                split_rngs={"params": True, "dropout": True},
                in_axes=(nn.broadcast, nn.broadcast, nn.broadcast),
                length=cfg.n_layer,
                metadata_params={nn.PARTITION_NAME: "layers"},
            )
            x_BxLxD, _ = stack(cfg, name="h")(x_BxLxD, positions_BxL, mask_BxLxS, deterministic)
        else:
            block_cls = _remat(Block, cfg.remat, static_argnums=(4,))
            for i in range(cfg.n_layer):
                x_BxLxD = block_cls(cfg, name=f"h_{i}")(x_BxLxD, positions_BxL, mask_BxLxS, deterministic)

        x_BxLxD = Norm(cfg, name="ln_f")(x_BxLxD)
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
        return nn.with_logical_constraint(logits_BxLxV, ("batch", "length", "vocab"))


def init_params(cfg: ModelConfig, rng, batch: int = 1, length: int | None = None):
    """Boxed (logically partitioned) params; use `jax.eval_shape` on it to count without allocating."""
    ids = jnp.zeros((batch, length or min(cfg.block_size, 8)), jnp.int32)
    return GPT(cfg).init({"params": rng}, ids)["params"]


def count_params(params) -> int:
    return sum(math.prod(x.shape) for x in jax.tree.leaves(nn.meta.unbox(params)))
