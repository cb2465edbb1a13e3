"""Fixed-length sampling inside a jitted step (a text GAN's generator): one KV-cache sweep over the row.

`fill` resamples every position after `keep_B[b]` left to right and keeps the tokens up to it: a prompt
(keep = P - 1) or a Monte-Carlo rollout from a partial sample (keep = t). `gumbel_fill` is the same sweep
with straight-through Gumbel-softmax samples fed back as one-hot rows through the embedding matrix, so
gradients reach the generator through every sampled token.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gpt_jax.config import ModelConfig
from gpt_jax.kv_cache import init_cache
from gpt_jax.model import GPT


def fill(cfg: ModelConfig, params, tokens_BxL, keep_B, rng, temperature: float = 1.0):
    """tokens_BxL with positions > keep_B resampled from the model at `temperature` (int32 [B, L])."""
    b, length = tokens_BxL.shape
    model = GPT(cfg)

    def step(carry, i):
        cache, tok_B = carry
        logits_Bx1xV, cache = model.apply({"params": params}, tok_B[:, None], cache=cache)
        sampled_B = jax.random.categorical(jax.random.fold_in(rng, i), logits_Bx1xV[:, 0] / temperature)
        nxt_B = jnp.where(i + 1 <= keep_B, tokens_BxL[:, i + 1], sampled_B.astype(tokens_BxL.dtype))
        return (cache, nxt_B), nxt_B

    carry = (init_cache(cfg, b, length), tokens_BxL[:, 0])
    _, out_LxB = jax.lax.scan(step, carry, jnp.arange(length - 1))
    return jnp.concatenate([tokens_BxL[:, :1], out_LxB.T], axis=1)


def straight_through(logits_BxV, rng, tau: float):
    """(one-hot [B, V]: exactly the Gumbel-max sample's one-hot forward, the gradient of
    softmax((logits + g) / tau) backward; the sampled ids [B])."""
    g_BxV = jax.random.gumbel(rng, logits_BxV.shape, logits_BxV.dtype)
    ids_B = jnp.argmax(logits_BxV + g_BxV, axis=-1)
    hard_BxV = jax.nn.one_hot(ids_B, logits_BxV.shape[-1], dtype=logits_BxV.dtype)
    soft_BxV = jax.nn.softmax((logits_BxV + g_BxV) / tau, axis=-1)
    return hard_BxV + (soft_BxV - jax.lax.stop_gradient(soft_BxV)), ids_B  # the bracket is exactly 0 forward


def gumbel_fill(cfg: ModelConfig, params, tokens_BxL, prompt_len: int, rng, tau: float, temperature: float = 1.0):
    """(one-hot rows [B, L, V] float32, ids [B, L]): the first `prompt_len` rows are the prompt's one-hots,
    the rest straight-through samples, each fed back into the model as one-hot @ wte (differentiable)."""
    b, length = tokens_BxL.shape
    model, wte_VxD = GPT(cfg), params["wte"]
    prompt_BxLxV = jax.nn.one_hot(tokens_BxL, cfg.vocab_size, dtype=jnp.float32)

    def step(carry, i):
        cache, row_BxV = carry
        embeds_Bx1xD = (row_BxV @ wte_VxD.astype(jnp.float32))[:, None]
        logits_Bx1xV, cache = model.apply(
            {"params": params}, jnp.zeros((b, 1), jnp.int32), cache=cache, embeds_BxLxD=embeds_Bx1xD
        )
        st_BxV, _ = straight_through(logits_Bx1xV[:, 0] / temperature, jax.random.fold_in(rng, i), tau)
        nxt_BxV = jnp.where(i + 1 < prompt_len, prompt_BxLxV[:, i + 1], st_BxV)
        return (cache, nxt_BxV), nxt_BxV

    carry = (init_cache(cfg, b, length), prompt_BxLxV[:, 0])
    _, out_LxBxV = jax.lax.scan(step, carry, jnp.arange(length - 1))
    rows_BxLxV = jnp.concatenate([prompt_BxLxV[:, :1], out_LxBxV.transpose(1, 0, 2)], axis=1)
    return rows_BxLxV, jnp.argmax(rows_BxLxV, axis=-1).astype(jnp.int32)
