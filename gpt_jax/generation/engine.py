"""`generate`: all new tokens at once, prefill + KV-cache decode (or beam search) as one compiled program.

Calls that share (batch, prompt bucket, max_new_tokens, strategy, which filters are on) reuse one
program; every option value (temperature, top_k within its power-of-two bound, top_p, min_p,
penalties, token lists, seed) is traced.
"""

from __future__ import annotations

import jax
import numpy as np

from gpt_jax.config import ModelConfig
from gpt_jax.generation import decode as dec
from gpt_jax.generation.beam import beam_search_jit
from gpt_jax.generation.options import EARLY_STOPPING, GenerateOptions, check_options
from gpt_jax.generation.placement import Placement
from gpt_jax.generation.processors import knobs_of, mode_of
from gpt_jax.generation.prompts import check_length, pack, prompt_rows
from gpt_jax.generation.stream import stream_rows


def generate(
    model_config: ModelConfig,
    params,
    prompt_ids_BxL,
    options: GenerateOptions,
    *,
    prompt_mask_BxL=None,
    mesh=None,
) -> np.ndarray:
    """New token ids, int32 numpy [B, max_new_tokens]; rows that stopped hold options.pad_id after
    their stop token; with num_beams > 1 each row is its best beam. `params` are unboxed.

    prompt_ids_BxL: [B, L] ids (with prompt_mask_BxL marking real tokens, either padding side) or a
    list of 1-D rows of any lengths. `mesh`: run sharded on it (e.g. the training mesh).
    """
    o = check_options(options)
    cfg, n = model_config, o.max_new_tokens
    rows = prompt_rows(prompt_ids_BxL, prompt_mask_BxL)
    check_length(cfg, max(map(len, rows)), n, o.slide)
    if o.stop_strings or (o.slide and cfg.pos != "rope" and max(map(len, rows)) + n > cfg.block_size):
        out = np.full((len(rows), n), o.pad_id, np.int32)  # the host looks between chunks
        chunks = list(stream_rows(cfg, params, rows, o, mesh))
        got = np.concatenate(chunks, axis=1) if chunks else out[:, :0]
        out[:, : got.shape[1]] = got
        return out
    mode, knobs = mode_of(o, cfg.vocab_size), knobs_of(o, cfg.vocab_size)
    prompt_BxP, start_B = pack(cfg, rows, n)
    cache_len = prompt_BxP.shape[1] + n
    place = Placement(cfg, mesh)
    params = place.params(params)
    with place.scope():
        prompt_BxP, start_B = place.batch(prompt_BxP, start_B)
        knobs = place.replicated(knobs)
        if o.num_beams > 1:
            keep = max(2, 1 + len(set(o.stop_ids))) * o.num_beams
            early = np.int32(EARLY_STOPPING.index(o.early_stopping))
            args = (cfg, mode, cache_len, n, o.num_beams, keep, params, prompt_BxP, start_B, knobs)
            out = beam_search_jit(*args, np.float32(o.length_penalty), early)
        else:
            key = place.replicated(jax.random.key(o.seed))
            out = dec.generate_jit(cfg, mode, cache_len, n, params, prompt_BxP, start_B, knobs, key)
    return np.asarray(out)
