"""A test-only model family: an MLP language model (each position sees its token and the running mean of
the embeddings before it). One module plus one registry line, as any family: `registry.register(FAMILY)`."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp
from optax.contrib import MuonDimensionNumbers

from gpt_jax.models.base import ModelFamily
from gpt_jax.optim import map_with_path


@dataclasses.dataclass(frozen=True)
class MLPLMConfig:
    vocab_size: int
    block_size: int = 32
    n_embd: int = 32
    d_ff: int = 64
    dtype: str = "float32"


class MLPLM(nn.Module):
    cfg: MLPLMConfig

    @nn.compact
    def __call__(self, ids_BxL, positions_BxL=None, mask_BxLxS=None, deterministic: bool = True):
        del positions_BxL, mask_BxLxS, deterministic  # causal by construction (running mean)
        c = self.cfg
        init = nn.initializers.normal(0.02)
        wte = self.param("wte", nn.with_logical_partitioning(init, ("vocab", "embed")), (c.vocab_size, c.n_embd))
        x_BxLxD = wte[ids_BxL]
        count_L = jnp.arange(1, ids_BxL.shape[1] + 1, dtype=jnp.float32)
        context_BxLxD = jnp.cumsum(x_BxLxD, axis=1) / count_L[None, :, None]
        h = jnp.concatenate([x_BxLxD, context_BxLxD], axis=-1)
        h = nn.gelu(nn.Dense(c.d_ff, kernel_init=nn.with_logical_partitioning(init, ("embed", "mlp")), name="fc")(h))
        h = nn.Dense(c.n_embd, kernel_init=nn.with_logical_partitioning(init, ("mlp", "embed")), name="proj")(h)
        return (h @ wte.T).astype(jnp.float32)  # logits_BxLxV, tied head


def config_from(model_section, vocab_size: int) -> MLPLMConfig:
    keys = {f.name for f in dataclasses.fields(MLPLMConfig)} - {"vocab_size"}
    given = {k: model_section.get(k) for k in keys if model_section.get(k) is not None}
    return MLPLMConfig(vocab_size=model_section.get("vocab_size") or vocab_size, **given)


def init(cfg: MLPLMConfig, rng):
    return MLPLM(cfg).init({"params": rng}, jnp.zeros((1, 8), jnp.int32))["params"]


def matrix_dims(params):
    return map_with_path(
        lambda path, leaf: MuonDimensionNumbers(0, 1) if path[-1] == "kernel" and leaf.ndim == 2 else None, params
    )


def flops_per_token(cfg: MLPLMConfig, seq_len: int, lm_head: bool = True) -> float:
    del seq_len
    return 2 * (2 * cfg.n_embd * cfg.d_ff + cfg.d_ff * cfg.n_embd) + (2 * cfg.n_embd * cfg.vocab_size if lm_head else 0)


FAMILY = ModelFamily(
    name="mlp_lm",
    config_from=config_from,
    config_from_saved=lambda fields: MLPLMConfig(**fields),
    module=MLPLM,
    init=init,
    matrix_dims=matrix_dims,
    flops_per_token=flops_per_token,
)
