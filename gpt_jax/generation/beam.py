"""Beam search as one compiled program, with the semantics of Hugging Face transformers' (>= 4.50,
vectorised) `_beam_search`, so results can be compared token for token:

- scores are summed log-probs (log_softmax, then repetition penalty / banned ids applied to them);
- each step keeps the top K = max(2, 1 + n_stop) * W continuations over all W beams, the best W that
  did not just stop run on, and of those that did stop, only ones ranked in the top W may finish;
- a finished hypothesis scores sum_logprobs / generated_len ** length_penalty (stop token included);
- early_stopping: True = a row is done once it holds W finished hypotheses; False = done when the best
  running beam cannot beat the worst finished one at its current length; "never" = the same, but
  with length_penalty > 0 the best running beam is credited with the maximum length;
- at max_new_tokens every running beam counts as finished.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gpt_jax import kv_cache
from gpt_jax.config import ModelConfig
from gpt_jax.generation.decode import decode_mask, encode_prompt, prompt_seen
from gpt_jax.generation.processors import Knobs, Mode, mark_seen, penalize
from gpt_jax.model import GPT

NEG = -1.0e9  # HF's "very unlikely" score: finite, so sums stay ordered


def _gather(x_BxKx, idx_BxW):
    """x[b, idx[b, w], ...] -> [B, W, ...]."""
    idx = idx_BxW.reshape(idx_BxW.shape + (1,) * (x_BxKx.ndim - 2))
    return jnp.take_along_axis(x_BxKx, idx, axis=1)


def beam_search(
    cfg: ModelConfig,
    mode: Mode,
    cache_len: int,
    max_new: int,
    num_beams: int,
    keep: int,
    params,
    prompt_BxP,
    start_B,
    knobs: Knobs,
    length_penalty,
    early_stopping,
):
    """Best finished hypothesis per row: tokens [B, max_new] (pad_id after its end).

    length_penalty and early_stopping (0 = False, 1 = True, 2 = "never") are traced.
    """
    b, p = prompt_BxP.shape
    w, n, v = num_beams, max_new, cfg.vocab_size
    model = GPT(cfg)
    logits_BxV, cache = encode_prompt(cfg, params, prompt_BxP, start_B, cache_len)
    cache = kv_cache.repeat(cache, w)
    start_R = jnp.repeat(start_B, w)  # R = B * W rows, beam-major within a prompt
    seen_RxV = jnp.repeat(prompt_seen(prompt_BxP, start_B, v), w, axis=0) if mode.repetition else None
    logits_RxV = jnp.repeat(logits_BxV, w, axis=0)
    pad = knobs.pad_id
    lp = jnp.asarray(length_penalty, jnp.float32)
    early_true, never = early_stopping == 1, early_stopping == 2
    k_top = jnp.arange(keep) < w  # only candidates ranked in the top W may finish

    def select(t, logits_RxV, s):
        """One beam step on the logits of the running beams (HF steps c-f)."""
        logp_RxV = penalize(jax.nn.log_softmax(logits_RxV, axis=-1), s["seen"], knobs, mode)
        acc_BxWV = (logp_RxV.reshape(b, w, v) + s["run_scores"][..., None]).reshape(b, w * v)
        top_BxK, idx_BxK = jax.lax.top_k(acc_BxWV, keep)
        parent_BxK, tok_BxK = idx_BxK // v, (idx_BxK % v).astype(jnp.int32)
        seq_BxKxN = _gather(s["run_seq"], parent_BxK).at[:, :, t].set(tok_BxK)
        hits_BxK = knobs.stop_V[tok_BxK] | (t == n - 1)
        # e. the best W continuations that did not stop run on
        run_BxK = top_BxK + hits_BxK * NEG
        nxt_BxW = jax.lax.top_k(run_BxK, w)[1]
        # f. stopped candidates in the top W may replace worse finished hypotheses
        fin_BxK = top_BxK / jnp.power(jnp.asarray(t + 1, jnp.float32), lp)
        full_Bx1 = jnp.all(s["fin"], axis=-1, keepdims=True) & early_true
        fin_BxK = fin_BxK + full_Bx1 * NEG + (~s["open"]) * NEG + (~(hits_BxK & k_top)) * NEG
        merged_scores = jnp.concatenate([s["fin_scores"], fin_BxK], axis=1)
        best_BxW = jax.lax.top_k(merged_scores, w)[1]
        fin_seq = _gather(jnp.concatenate([s["fin_seq"], seq_BxKxN], axis=1), best_BxW)
        fin = _gather(jnp.concatenate([s["fin"], hits_BxK & k_top], axis=1), best_BxW)
        fin_scores = _gather(merged_scores, best_BxW)
        run_scores = _gather(run_BxK, nxt_BxW)
        # g. can a running beam still beat the worst finished hypothesis? (HF's heuristic)
        length = jnp.where(never & (lp > 0.0), n, t + 1)
        best_Bx1 = run_scores[:, :1] / jnp.power(jnp.asarray(length, jnp.float32), lp)
        worst_BxW = jnp.where(fin, jnp.min(fin_scores, axis=1, keepdims=True), NEG)
        open_Bx1 = s["open"] & jnp.any(best_Bx1 > worst_BxW, axis=-1, keepdims=True)
        go = jnp.any(open_Bx1) & ~(jnp.all(fin) & early_true) & ~jnp.all(hits_BxK)
        parent_R = (_gather(parent_BxK, nxt_BxW) + jnp.arange(b)[:, None] * w).reshape(-1)
        tok_R = _gather(tok_BxK, nxt_BxW).reshape(-1)
        seen = None if s["seen"] is None else mark_seen(jnp.take(s["seen"], parent_R, axis=0), tok_R)
        s = dict(
            s,
            run_seq=_gather(seq_BxKxN, nxt_BxW),
            run_scores=run_scores,
            fin_seq=fin_seq,
            fin_scores=fin_scores,
            fin=fin,
            open=open_Bx1,
            seen=seen,
            go=go,
            t=jnp.asarray(t + 1, jnp.int32),
        )
        return s, parent_R, tok_R

    s = dict(
        run_seq=jnp.full((b, w, n), pad, jnp.int32),
        run_scores=jnp.zeros((b, w)).at[:, 1:].set(NEG),  # only beam 0 expands at first: all are equal
        fin_seq=jnp.full((b, w, n), pad, jnp.int32),
        fin_scores=jnp.full((b, w), NEG),
        fin=jnp.zeros((b, w), bool),
        open=jnp.ones((b, 1), bool),
        seen=seen_RxV,
    )
    s, parent_R, tok_R = select(0, logits_RxV, s)
    positions_R = p - start_R

    def cond(c):
        return c[0]["go"] & (c[0]["t"] < n)

    def body(c):
        s, cache, parent_R, tok_R = c
        t = s["t"]
        cache = kv_cache.reorder(cache, parent_R)
        logits_Rx1xV, cache = model.apply(
            {"params": params},
            tok_R[:, None],
            (positions_R + t - 1)[:, None],
            decode_mask(start_R, cache.index, cache.length),
            cache=cache,
        )
        s, parent_R, tok_R = select(t, logits_Rx1xV[:, 0], s)
        return s, cache, parent_R, tok_R

    s, *_ = jax.lax.while_loop(cond, body, (s, cache, parent_R, tok_R))
    return s["fin_seq"][:, 0]


beam_search_jit = jax.jit(beam_search, static_argnums=(0, 1, 2, 3, 4, 5))
