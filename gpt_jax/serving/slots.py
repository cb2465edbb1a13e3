"""The compiled half of continuous batching: B slots over one batched KV cache, one shared write column.

The cache is a ring of `window` columns (a job never holds more: prompt + max_tokens <= window). Every
decode step writes column `cache.index` for all B rows (gpt_jax.kv_cache's one-index write, so the model
is used unchanged), then the index wraps to 0 at the end. A row attends to its last `len_B` columns
before the index (mod window): attention sums over a set of keys, and positions are explicit, so where
in the ring a key sits does not matter. Why a ring: decode at 32 rows is bound by reading the cache,
and a linear cache needs spare columns plus a periodic roll (a copy of the whole cache) to stay in place.
A request joins between chunks: its prompt, LEFT-padded to a power-of-two bucket P, is prefilled alone
into a fresh [1, P] cache, which becomes its slot's row at columns [index - P, index) mod window.

Programs: `insert` once per prompt bucket (P in 16, 32, ... window), `step` once, and `score` (echo
logprobs) once per bucket: the count never depends on how many requests came or their lengths.
Sampling is per row (temperature, top_k, top_p, seed, presence/frequency penalties over the row's own
generated tokens); temperature 0 is greedy for that row.
"""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp

from gpt_jax.config import ModelConfig
from gpt_jax.generation.decode import encode_prompt
from gpt_jax.generation.processors import Knobs, Mode, choose
from gpt_jax.kv_cache import KVCache, init_cache
from gpt_jax.model import GPT

TOP = 5  # alternatives returned per token (OpenAI's completions cap `logprobs` at 5)


@flax.struct.dataclass
class Slots:
    cache: KVCache  # [B rows, S = window columns], a ring; index in [0, S)
    token_B: jax.Array  # last chosen token, fed next
    pos_B: jax.Array  # its position id
    len_B: jax.Array  # real columns of each row: the len_B before cache.index (mod S)
    step_B: jax.Array  # tokens produced by the row (its sampling key's counter)
    key_B: jax.Array  # uint32 [B, 2]: raw PRNG key data per row
    temperature_B: jax.Array  # 0 = greedy
    top_k_B: jax.Array  # <= the static bound
    top_p_B: jax.Array
    penalty_Bx2: jax.Array  # (presence, frequency) per row
    counts_BxV: jax.Array  # how often the row has produced each token (for the penalties)


@flax.struct.dataclass
class Shared:
    banned_V: jax.Array  # never produced (undecodable ids, single-token banned words)


def mode(vocab: int, top_k_bound: int) -> Mode:
    return Mode(greedy=False, top_k_bound=min(vocab, top_k_bound), top_p=True)


def init_slots(cfg: ModelConfig, batch: int, length: int) -> Slots:
    zi = lambda: jnp.zeros((batch,), jnp.int32)  # fresh buffers: the state is donated, leaf by leaf
    return Slots(
        cache=init_cache(cfg, batch, length),
        token_B=zi(),
        pos_B=zi(),
        len_B=zi(),
        step_B=zi(),
        key_B=jnp.zeros((batch, 2), jnp.uint32),
        temperature_B=jnp.ones((batch,), jnp.float32),
        top_k_B=zi() + 1,
        top_p_B=jnp.ones((batch,), jnp.float32),
        penalty_Bx2=jnp.zeros((batch, 2), jnp.float32),
        counts_BxV=jnp.zeros((batch, cfg.vocab_size), jnp.float32),
    )


def _pick(logits_BxV, knobs, shared: Shared, md: Mode, step_B):
    """(token [B], its logprob [B], top TOP logprobs and ids [B, TOP]) under each row's own knobs."""
    temperature_B, top_k_B, top_p_B, key_B = knobs

    def one(logits_V, t, k, p, key, step):
        kn = Knobs(
            temperature=jnp.where(t > 0, t, 1.0),
            top_k=k,
            top_p=p,
            min_p=jnp.float32(0),
            repetition_penalty=jnp.float32(1),
            banned_V=shared.banned_V,
            stop_V=shared.banned_V,
            pad_id=jnp.int32(-1),
        )
        rng = jax.random.fold_in(jax.random.wrap_key_data(key), step)
        sampled = choose(logits_V[None], None, kn, md, rng)[0]
        greedy = jnp.argmax(jnp.where(shared.banned_V, -jnp.inf, logits_V)).astype(jnp.int32)
        return jnp.where(t > 0, sampled, greedy)

    token_B = jax.vmap(one)(logits_BxV, temperature_B, top_k_B, top_p_B, key_B, step_B)
    logp_BxV = jax.nn.log_softmax(logits_BxV, axis=-1)
    top_lp_BxT, top_id_BxT = jax.lax.top_k(logp_BxV, TOP)
    chosen_B = jnp.take_along_axis(logp_BxV, token_B[:, None], axis=-1)[:, 0]
    return token_B, chosen_B, top_lp_BxT, top_id_BxT


def ring_mask(len_B, index, length: int):
    """[B, 1, S + 1]: the token written at `index` sees its row's last len_B columns (mod S), then itself."""
    age_S = jnp.mod(index - 1 - jnp.arange(length), length)  # 0 = the column written last
    cached_BxS = age_S[None] < len_B[:, None]
    return jnp.concatenate([cached_BxS, jnp.ones_like(cached_BxS[:, :1])], axis=1)[:, None]


def _put_row(big, small, slot, end, col_axis: int):
    """Writes `small` (one row, P columns) into `big` as row `slot`, at columns [end - P, end) mod S
    (the rest of the row zeroed: no other column of it is attended)."""
    lead = big.ndim - 4  # scan_layers: a leading layer axis
    axis, s, p = col_axis + lead, big.shape[col_axis + lead], small.shape[col_axis + lead]
    pad = [(0, 0)] * small.ndim
    pad[axis] = (0, s - p)
    row = jnp.pad(small.astype(big.dtype), pad)  # columns [0, P)
    shift = jnp.mod(end - p, s)  # rotate right by shift: row[c] = padded[(c - shift) mod S]
    row = jax.lax.dynamic_slice_in_dim(jnp.concatenate([row, row], axis=axis), s - shift, s, axis=axis)
    idx = [0] * big.ndim
    idx[lead] = slot
    return jax.lax.dynamic_update_slice(big, row, tuple(idx))


def insert(cfg: ModelConfig, md: Mode, params, s: Slots, shared: Shared, slot, prompt_1xP, length, knobs):
    """Prefill one prompt (left-padded to its bucket P, `length` real tokens) into row `slot`.
    knobs: (temperature, top_k, top_p, key data [2], (presence, frequency) penalties [2]).
    Returns (slots, token, logprob, top lp, top ids)."""
    p = prompt_1xP.shape[1]
    start_1 = jnp.reshape(p - length, (1,)).astype(jnp.int32)
    logits_1xV, small = encode_prompt(cfg, params, prompt_1xP, start_1, p)
    end = s.cache.index
    k = jax.tree.map(lambda b, m: _put_row(b, m, slot, end, 3), s.cache.k, small.k)
    v = jax.tree.map(lambda b, m: _put_row(b, m, slot, end, 2), s.cache.v, small.v)
    t, tk, tp, key, penalty = knobs
    row = (t[None], tk[None], tp[None], key[None])
    token, lp, top_lp, top_id = _pick(logits_1xV, row, shared, md, jnp.zeros((1,), jnp.int32))
    s = s.replace(
        cache=s.cache.replace(k=k, v=v),
        token_B=s.token_B.at[slot].set(token[0]),
        pos_B=s.pos_B.at[slot].set(length),
        len_B=s.len_B.at[slot].set(length),
        step_B=s.step_B.at[slot].set(1),
        key_B=s.key_B.at[slot].set(key),
        temperature_B=s.temperature_B.at[slot].set(t),
        top_k_B=s.top_k_B.at[slot].set(tk),
        top_p_B=s.top_p_B.at[slot].set(tp),
        penalty_Bx2=s.penalty_Bx2.at[slot].set(penalty),
        counts_BxV=s.counts_BxV.at[slot].set(jax.nn.one_hot(token[0], s.counts_BxV.shape[1])),
    )
    return s, token[0], lp[0], top_lp[0], top_id[0]


def step(cfg: ModelConfig, md: Mode, n_steps: int, params, s: Slots, shared: Shared):
    """n_steps decode steps for every row (idle rows too: the host ignores them). Returns
    (slots, tokens [B, n], logprobs [B, n], top lp [B, n, TOP], top ids [B, n, TOP])."""
    model = GPT(cfg)
    b, length = s.token_B.shape[0], s.cache.length

    def body(i, carry):
        st, toks, lps, tlps, tids = carry
        logits_Bx1xV, cache = model.apply(
            {"params": params},
            st.token_B[:, None],
            st.pos_B[:, None],
            ring_mask(st.len_B, st.cache.index, length),
            cache=st.cache,
        )
        cache = cache.replace(index=jnp.where(cache.index >= length, 0, cache.index))
        knobs = (st.temperature_B, st.top_k_B, st.top_p_B, st.key_B)
        presence_B, frequency_B = st.penalty_Bx2[:, 0:1], st.penalty_Bx2[:, 1:2]
        logits_BxV = logits_Bx1xV[:, 0] - presence_B * (st.counts_BxV > 0) - frequency_B * st.counts_BxV
        token_B, lp_B, tlp_BxT, tid_BxT = _pick(logits_BxV, knobs, shared, md, st.step_B)
        counts = st.counts_BxV + jax.nn.one_hot(token_B, st.counts_BxV.shape[1])
        st = st.replace(
            cache=cache,
            token_B=token_B,
            pos_B=st.pos_B + 1,
            len_B=jnp.minimum(st.len_B + 1, length),
            step_B=st.step_B + 1,
            counts_BxV=counts,
        )
        return (
            st,
            toks.at[:, i].set(token_B),
            lps.at[:, i].set(lp_B),
            tlps.at[:, i].set(tlp_BxT),
            tids.at[:, i].set(tid_BxT),
        )

    out = (
        s,
        jnp.zeros((b, n_steps), jnp.int32),
        jnp.zeros((b, n_steps), jnp.float32),
        jnp.zeros((b, n_steps, TOP), jnp.float32),
        jnp.zeros((b, n_steps, TOP), jnp.int32),
    )
    return jax.lax.fori_loop(0, n_steps, body, out)


def score(cfg: ModelConfig, params, ids_1xP):
    """Log-probabilities of a RIGHT-padded sequence's tokens: (logprob of token t+1 at t [1, P],
    top TOP logprobs/ids after each position [1, P, TOP])."""
    logits_1xPxV = GPT(cfg).apply({"params": params}, ids_1xP)
    logp = jax.nn.log_softmax(logits_1xPxV, axis=-1)
    nxt = jnp.concatenate([ids_1xP[:, 1:], ids_1xP[:, :1]], axis=1)
    chosen = jnp.take_along_axis(logp, nxt[..., None], axis=-1)[..., 0]
    top_lp, top_id = jax.lax.top_k(logp, TOP)
    return chosen, top_lp, top_id


insert_jit = jax.jit(insert, static_argnums=(0, 1), donate_argnums=(3,))
step_jit = jax.jit(step, static_argnums=(0, 1, 2), donate_argnums=(4,))
score_jit = jax.jit(score, static_argnums=(0,))
