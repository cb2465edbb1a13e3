"""`stream`: new tokens chunk by chunk, one compiled chunk in flight while the host hands the last over.

Also what `generate` runs when the host must look between chunks: stop strings, and sliding windows
(position-table models past block_size).
"""

from __future__ import annotations

from collections.abc import Iterator

import jax
import numpy as np

from gpt_jax.config import ModelConfig
from gpt_jax.generation import decode as dec
from gpt_jax.generation.options import GenerateOptions, check_options
from gpt_jax.generation.placement import Placement
from gpt_jax.generation.processors import knobs_of, mode_of
from gpt_jax.generation.prompts import check_length, pack, prompt_rows


def stream(
    model_config: ModelConfig,
    params,
    prompt_ids_BxL,
    options: GenerateOptions,
    *,
    prompt_mask_BxL=None,
    mesh=None,
) -> Iterator[np.ndarray]:
    """Yields new token ids as they are produced: int32 [B, c] per chunk, the prefill's first token
    alone (c=1) then up to `options.chunk` at a time; rows that stopped hold pad_id. Ends after
    max_new_tokens or once every row stopped. Same tokens as `generate` with the same options.

    The next chunk is dispatched before the current one is handed over, so the device keeps working
    while the caller decodes and prints. Sampling only (no beam search). Options and prompts are
    checked on the call, before the first chunk is asked for.
    """
    o = check_options(options)
    o.check_stream()
    rows = prompt_rows(prompt_ids_BxL, prompt_mask_BxL)
    check_length(model_config, max(map(len, rows)), o.max_new_tokens, o.slide)
    return stream_rows(model_config, params, rows, o, mesh)


def stream_rows(cfg: ModelConfig, params, rows, o: GenerateOptions, mesh) -> Iterator[np.ndarray]:
    """stream() after validation: windows (slide) -> chunks, cut at stop strings."""
    done = np.zeros(len(rows), bool)  # shared: stop ids and stop strings set it, each dispatch reads it
    outputs = [[] for _ in rows]
    seen_text = [0 for _ in rows]
    longest = max(map(len, o.stop_strings), default=0)
    for toks_BxC in _windows(cfg, params, rows, o, mesh, done):
        for b in np.flatnonzero(~done) if o.stop_strings else ():
            new = [int(t) for t in toks_BxC[b] if t != o.pad_id]
            text = o.decode(outputs[b] + new)
            since = max(0, seen_text[b] - longest + 1)  # a stop string may straddle two chunks
            if any(s in text[since:] for s in o.stop_strings):
                j = next(
                    j
                    for j in range(len(new))
                    if any(s in o.decode(outputs[b] + new[: j + 1])[since:] for s in o.stop_strings)
                )
                toks_BxC[b, j + 1 :] = o.pad_id
                new, done[b] = new[: j + 1], True
            outputs[b] += new
            seen_text[b] = len(text)
        yield toks_BxC
        if done.all():
            return


def _windows(cfg: ModelConfig, params, rows, o: GenerateOptions, mesh, done) -> Iterator[np.ndarray]:
    """Position-table models past block_size (slide=True): windows of block_size // 2 new tokens, each
    continuing from the last block_size // 2 tokens of each row, re-encoded. Windows share their
    shapes, so one compiled program serves all (a prompt longer than half a block makes the first
    window shorter); the last one is cut short on the host."""
    left, contexts, window = o.max_new_tokens, list(rows), 0
    keep = cfg.block_size // 2
    min_len = 0
    while left > 0 and not done.all():
        if cfg.pos == "rope" or (window == 0 and max(map(len, contexts)) + left <= cfg.block_size):
            n = left
        else:
            if max(map(len, contexts)) >= cfg.block_size:  # a prompt that fills the window alone
                contexts = [c[-keep:] for c in contexts]
            n, min_len = cfg.block_size - max(keep, *map(len, contexts)), keep
        key = jax.random.key(o.seed) if window == 0 else jax.random.fold_in(jax.random.key(o.seed), window)
        made = []
        for toks_BxC in _chunks(cfg, params, contexts, n, o, key, mesh, done, min_len):
            toks_BxC = toks_BxC[:, : left - sum(m.shape[1] for m in made)]
            made.append(np.maximum(toks_BxC, 0))  # pads only in rows that are done: any valid id will do
            yield toks_BxC
            if sum(m.shape[1] for m in made) == left:
                break
        left -= sum(m.shape[1] for m in made)
        contexts = [np.concatenate([c, *[m[b] for m in made]])[-keep:] for b, c in enumerate(contexts)]
        window += 1


def _chunks(
    cfg: ModelConfig, params, rows, n: int, o: GenerateOptions, key, mesh, done, min_len=0
) -> Iterator[np.ndarray]:
    """Prefill, then compiled chunks of o.chunk decode steps. The first token is handed over at once;
    after it one chunk stays in flight ahead of the caller, so the device works while the host prints."""
    mode, knobs = mode_of(o, cfg.vocab_size), knobs_of(o, cfg.vocab_size)
    prompt_BxP, start_B = pack(cfg, rows, n, min_len)
    cache_len = prompt_BxP.shape[1] + n
    stop_ids = np.flatnonzero(knobs.stop_V)
    place = Placement(cfg, mesh)
    params = place.params(params)
    with place.scope():
        prompt_BxP, start_B = place.batch(prompt_BxP, start_B)
        knobs, key = place.replicated(knobs), place.replicated(key)
        state, first_Bx1 = dec.prefill_jit(cfg, mode, cache_len, params, prompt_BxP, start_B, knobs, key)
    planned = 1

    def dispatch():
        nonlocal state, planned
        if planned >= n or done.all():
            return None
        with place.scope():
            state = state.replace(done_B=state.done_B | place.batch(done)[0])
            state, toks_BxC, steps = dec.decode_jit(cfg, mode, o.chunk, n, params, state, knobs)
        planned += min(o.chunk, n - planned)
        return toks_BxC, steps

    def to_host(toks_BxC, steps):
        toks_BxC = np.array(toks_BxC)[:, : int(steps)]
        toks_BxC[done] = o.pad_id  # rows the host stopped after this chunk was dispatched
        done[:] |= np.isin(toks_BxC, stop_ids).any(axis=1)
        return toks_BxC

    yield to_host(first_Bx1, 1)
    pending = dispatch()
    while pending is not None:
        ahead = dispatch()
        toks_BxC = to_host(*pending)
        if toks_BxC.shape[1] == 0:  # every row was done
            return
        yield toks_BxC
        pending = ahead
