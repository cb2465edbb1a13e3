"""Logits processors and token choice, with Hugging Face `generate` semantics and order:
repetition penalty -> banned tokens -> (greedy argmax | temperature -> top-k -> top-p -> min-p -> sample).

Which processors run is static (`Mode`: a compiled program per combination); their values are traced
(`Knobs`: changing temperature, top_k within its bound, top_p, ... never recompiles). `mode_of` and
`knobs_of` derive both from a `GenerateOptions`.
"""

from __future__ import annotations

import dataclasses

import flax
import jax
import jax.numpy as jnp
import numpy as np

from gpt_jax.generation.options import GenerateOptions

NEG_INF = -jnp.inf


@dataclasses.dataclass(frozen=True)
class Mode:
    """What the compiled program does. top_k_bound: 0 = no top-k, else a static bound >= top_k."""

    greedy: bool = False
    top_k_bound: int = 0
    top_p: bool = False
    min_p: bool = False
    repetition: bool = False  # carries a [B, V] "seen" mask through the loop


@flax.struct.dataclass
class Knobs:
    """Traced values of the processors (scalars, and [V] masks so the token lists never change shapes)."""

    temperature: jax.Array  # f32
    top_k: jax.Array  # int32, <= Mode.top_k_bound
    top_p: jax.Array  # f32 in (0, 1]
    min_p: jax.Array  # f32 in [0, 1]
    repetition_penalty: jax.Array  # f32 > 0
    banned_V: jax.Array  # bool: never produced
    stop_V: jax.Array  # bool: a row is done once it produces one (it is kept in the output)
    pad_id: jax.Array  # int32: emitted by rows that are done


def mode_of(o: GenerateOptions, vocab: int) -> Mode:
    """The static part: which processors the compiled program contains (set = on, whatever the value)."""
    sampling = o.num_beams == 1 and not o.greedy
    k = o.top_k if sampling and o.top_k is not None and o.top_k < vocab else 0
    return Mode(
        greedy=o.greedy or o.num_beams > 1,
        top_k_bound=min(vocab, 1 << (k - 1).bit_length()) if k else 0,
        top_p=sampling and o.top_p is not None,
        min_p=sampling and o.min_p is not None,
        repetition=o.repetition_penalty is not None,
    )


def knobs_of(o: GenerateOptions, vocab: int) -> Knobs:
    """The traced part, as host (numpy) values."""
    o.check_ids(vocab)

    def mask(ids):
        m = np.zeros(vocab, bool)
        m[list(ids)] = True
        return m

    return Knobs(
        temperature=np.float32(o.temperature or 1.0),
        top_k=np.int32(o.top_k or 0),
        top_p=np.float32(o.top_p or 1.0),
        min_p=np.float32(o.min_p or 0.0),
        repetition_penalty=np.float32(o.repetition_penalty or 1.0),
        banned_V=mask(o.banned_ids),
        stop_V=mask(o.stop_ids),
        pad_id=np.int32(o.pad_id),
    )


def penalize(logits_BxV, seen_BxV, knobs: Knobs, mode: Mode):
    """Repetition penalty (CTRL, Keskar et al. 2019, as HF: seen tokens' logits /p if > 0 else *p), banned ids
    (always applied: one select, so a changed list never recompiles)."""
    if mode.repetition:
        p = knobs.repetition_penalty
        logits_BxV = jnp.where(seen_BxV, jnp.where(logits_BxV < 0, logits_BxV * p, logits_BxV / p), logits_BxV)
    return jnp.where(knobs.banned_V, NEG_INF, logits_BxV)


def choose(logits_BxV, seen_BxV, knobs: Knobs, mode: Mode, key) -> jax.Array:
    """Next token ids [B] (int32) from float32 logits."""
    logits_BxV = penalize(logits_BxV, seen_BxV, knobs, mode)
    if mode.greedy:
        return jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
    logits_BxV = logits_BxV / knobs.temperature
    # Candidates: the top-k (sorted) when top-k is on, the whole vocab sorted when only top-p needs an
    # order, else the raw vocab. Sampling over the k candidates alone is exact and much cheaper.
    ids_BxC = None
    if mode.top_k_bound:
        cand_BxC, ids_BxC = jax.lax.top_k(logits_BxV, mode.top_k_bound)
        kth_Bx1 = jnp.take(cand_BxC, jnp.clip(knobs.top_k, 1, mode.top_k_bound) - 1, axis=-1)[:, None]
        cand_BxC = jnp.where(cand_BxC < kth_Bx1, NEG_INF, cand_BxC)  # ties with the k-th stay, as in HF
    elif mode.top_p:
        cand_BxC, ids_BxC = jax.lax.top_k(logits_BxV, logits_BxV.shape[-1])
    else:
        cand_BxC = logits_BxV
    if mode.top_p:  # keep the smallest prefix (by probability) whose mass reaches top_p, at least one token
        probs_BxC = jax.nn.softmax(cand_BxC, axis=-1)
        before_BxC = jnp.cumsum(probs_BxC, axis=-1) - probs_BxC
        cand_BxC = jnp.where((before_BxC < knobs.top_p) | (knobs.top_p >= 1.0), cand_BxC, NEG_INF)
    if mode.min_p:  # p < min_p * p_max  <=>  logit < max_logit + log(min_p)
        floor_Bx1 = jnp.max(cand_BxC, axis=-1, keepdims=True) + jnp.log(knobs.min_p)
        cand_BxC = jnp.where(cand_BxC < floor_Bx1, NEG_INF, cand_BxC)
    choice_B = jax.random.categorical(key, cand_BxC, axis=-1)
    if ids_BxC is not None:
        choice_B = jnp.take_along_axis(ids_BxC, choice_B[:, None], axis=-1)[:, 0]
    return choice_B.astype(jnp.int32)


def mark_seen(seen_BxV, tokens_B):
    if seen_BxV is None:
        return None
    return seen_BxV.at[jnp.arange(tokens_B.shape[0]), tokens_B].set(True)
