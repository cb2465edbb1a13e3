"""Compiled prefill and KV-cache decode loops (greedy and sampling).

Prompts arrive LEFT-padded to a bucket length P: row b's real tokens fill slots [start_b, P), so every
row's next token goes to the same cache slot and one dynamic_update_slice serves the whole batch.
Position ids restart at 0 on each row's first real token; pad slots are masked out of attention.

`prefill` encodes the prompts and picks the first new token; `decode` runs up to n_steps more in a
lax.while_loop that exits early once every row is done. `generate_tokens` is both in one program;
a stream calls `prefill` once and `decode` per chunk, carrying `State` between calls.
"""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp

from gpt_jax.config import ModelConfig
from gpt_jax.generation.processors import Knobs, Mode, choose, mark_seen
from gpt_jax.kv_cache import KVCache, init_cache
from gpt_jax.model import GPT


@flax.struct.dataclass
class State:
    cache: KVCache
    token_B: jax.Array  # the last chosen token: fed to the model next
    pos_B: jax.Array  # its position id
    start_B: jax.Array  # first real (non-pad) slot of each row
    done_B: jax.Array  # produced a stop token (or stopped by the host)
    step: jax.Array  # int32: tokens produced so far
    key: jax.Array  # step t samples with fold_in(key, t): chunking does not change the samples
    seen_BxV: jax.Array | None  # tokens in prompt + output (repetition penalty only)


def prefill_mask(start_B, length: int):
    """[B, P, P]: causal over real tokens; a pad query sees only itself, which keeps its k/v finite."""
    q_PxP = jnp.arange(length)[:, None]
    s_PxP = jnp.arange(length)[None, :]
    real_BxPxP = (s_PxP <= q_PxP)[None] & (s_PxP[None] >= start_B[:, None, None])
    return real_BxPxP | (s_PxP == q_PxP)[None]


def decode_mask(start_B, slot, cache_len: int):
    """[B, 1, S + 1]: the token written at `slot` sees its row's real cached slots, then itself."""
    s_1xS = jnp.arange(cache_len)[None]
    cached_BxS = (s_1xS >= start_B[:, None]) & (s_1xS < slot)
    return jnp.concatenate([cached_BxS, jnp.ones_like(cached_BxS[:, :1])], axis=1)[:, None]


def encode_prompt(cfg: ModelConfig, params, prompt_BxP, start_B, cache_len: int):
    """Runs the prompts into a fresh cache: (last-position logits [B, V], cache)."""
    b, p = prompt_BxP.shape
    positions_BxP = jnp.maximum(jnp.arange(p)[None] - start_B[:, None], 0)
    logits_Bx1xV, cache = GPT(cfg).apply(
        {"params": params},
        prompt_BxP,
        positions_BxP,
        prefill_mask(start_B, p),
        cache=init_cache(cfg, b, cache_len),
        last_only=True,
    )
    return logits_Bx1xV[:, 0], cache


def prompt_seen(prompt_BxP, start_B, vocab: int):
    real_BxP = jnp.arange(prompt_BxP.shape[1])[None] >= start_B[:, None]
    rows_BxP = jnp.broadcast_to(jnp.arange(prompt_BxP.shape[0])[:, None], prompt_BxP.shape)
    return jnp.zeros((prompt_BxP.shape[0], vocab), bool).at[rows_BxP, prompt_BxP].max(real_BxP)


def prefill(cfg: ModelConfig, mode: Mode, cache_len: int, params, prompt_BxP, start_B, knobs: Knobs, key):
    """(State, first new token [B, 1])."""
    logits_BxV, cache = encode_prompt(cfg, params, prompt_BxP, start_B, cache_len)
    return first_token(cfg, mode, logits_BxV, cache, prompt_BxP, start_B, knobs, key)


def first_token(cfg: ModelConfig, mode: Mode, logits_BxV, cache: KVCache, prompt_BxP, start_B, knobs: Knobs, key):
    """(State, first new token [B, 1]) from a prefill's last-position logits and cache (any encoder:
    gpt_jax.generation.multimodal prefills from embeddings)."""
    seen_BxV = prompt_seen(prompt_BxP, start_B, cfg.vocab_size) if mode.repetition else None
    token_B = choose(logits_BxV, seen_BxV, knobs, mode, jax.random.fold_in(key, 0))
    state = State(
        cache=cache,
        token_B=token_B,
        pos_B=prompt_BxP.shape[1] - start_B,
        start_B=start_B,
        done_B=knobs.stop_V[token_B],
        step=jnp.ones((), jnp.int32),
        key=key,
        seen_BxV=mark_seen(seen_BxV, token_B),
    )
    return state, token_B[:, None]


def decode(cfg: ModelConfig, mode: Mode, n_steps: int, max_new: int, params, state: State, knobs: Knobs):
    """Up to n_steps more tokens: (State, tokens [B, n_steps], steps run).

    Columns past the steps run, and rows already done, hold pad_id.
    """
    model = GPT(cfg)
    b = state.token_B.shape[0]

    def cond(carry):
        i, st, _ = carry
        return (i < n_steps) & (st.step < max_new) & ~jnp.all(st.done_B)

    def body(carry):
        i, st, out_BxN = carry
        slot = st.cache.index
        logits_Bx1xV, cache = model.apply(
            {"params": params},
            st.token_B[:, None],
            st.pos_B[:, None],
            decode_mask(st.start_B, slot, st.cache.length),
            cache=st.cache,
        )
        token_B = choose(logits_Bx1xV[:, 0], st.seen_BxV, knobs, mode, jax.random.fold_in(st.key, st.step))
        out_BxN = jax.lax.dynamic_update_slice(out_BxN, jnp.where(st.done_B, knobs.pad_id, token_B)[:, None], (0, i))
        st = st.replace(
            cache=cache,
            token_B=token_B,
            pos_B=st.pos_B + 1,
            done_B=st.done_B | knobs.stop_V[token_B],
            step=st.step + 1,
            seen_BxV=mark_seen(st.seen_BxV, token_B),
        )
        return i + 1, st, out_BxN

    out_BxN = jnp.full((b, n_steps), knobs.pad_id, jnp.int32)
    steps, state, out_BxN = jax.lax.while_loop(cond, body, (jnp.zeros((), jnp.int32), state, out_BxN))
    return state, out_BxN, steps


def generate_tokens(
    cfg: ModelConfig, mode: Mode, cache_len: int, max_new: int, params, prompt_BxP, start_B, knobs, key
):
    """Prefill + the whole decode as one program: new tokens [B, max_new]."""
    state, first_Bx1 = prefill(cfg, mode, cache_len, params, prompt_BxP, start_B, knobs, key)
    if max_new == 1:
        return first_Bx1
    _, rest_BxN, _ = decode(cfg, mode, max_new - 1, max_new, params, state, knobs)
    return jnp.concatenate([first_Bx1, rest_BxN], axis=1)


# Static: the model config, the mode and the shapes that are not array shapes. Everything else is traced.
prefill_jit = jax.jit(prefill, static_argnums=(0, 1, 2))
decode_jit = jax.jit(decode, static_argnums=(0, 1, 2, 3), donate_argnums=(5,))
generate_jit = jax.jit(generate_tokens, static_argnums=(0, 1, 2, 3))
