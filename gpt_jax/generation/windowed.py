"""Sampling without a KV cache, for model families that have none: each new token re-reads a fixed
window of the last block_size tokens (one compiled program: the window is padded to full length)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gpt_jax.generation.options import GenerateOptions


def sample_windowed(module, params, prompt: list[int], block_size: int, options: GenerateOptions) -> list[int]:
    """New token ids after `prompt` (temperature/top_k/banned ids honoured; greedy at temperature 0)."""
    unsupported = [
        name
        for name, value in (
            ("top_p", options.top_p),
            ("min_p", options.min_p),
            ("repetition_penalty", options.repetition_penalty),
            ("stop_ids", options.stop_ids),
            ("stop_strings", options.stop_strings),
        )
        if value
    ] + (["num_beams"] if options.num_beams > 1 else [])
    if unsupported:
        raise ValueError(
            f"{', '.join(unsupported)} need the KV-cache engine, which this model family does not have; "
            "windowed sampling takes temperature, top_k, banned_ids and seed"
        )

    @jax.jit
    def next_logits(params, window_1xT, last):
        logits_1xTxV = module.apply({"params": params}, window_1xT)
        return jax.lax.dynamic_index_in_dim(logits_1xTxV[0], last, keepdims=False).astype(jnp.float32)

    ids, out = list(prompt) or [0], []
    rng = jax.random.key(options.seed)
    for _ in range(options.max_new_tokens):
        window = ids[-block_size:]
        padded = np.zeros((1, block_size), np.int32)
        padded[0, : len(window)] = window
        logits = next_logits(params, padded, len(window) - 1)
        if options.banned_ids:
            logits = logits.at[jnp.asarray(options.banned_ids)].set(-jnp.inf)
        if options.temperature == 0:
            token = int(jnp.argmax(logits))
        else:
            logits = logits / options.temperature
            if options.top_k:
                kth = jnp.sort(logits)[-min(options.top_k, logits.shape[-1])]
                logits = jnp.where(logits < kth, -jnp.inf, logits)
            rng, key = jax.random.split(rng)
            token = int(jax.random.categorical(key, logits))
        ids.append(token)
        out.append(token)
    return out
