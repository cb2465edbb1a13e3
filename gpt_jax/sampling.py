"""Plain autoregressive sampling (no KV cache): the end-of-training sample and quick looks.

One compiled loop over a fixed-size token buffer; the context is cropped to the last
block_size tokens, as nanoGPT does.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from gpt_jax.config import ModelConfig
from gpt_jax.model import GPT


@functools.partial(jax.jit, static_argnames=("cfg", "prompt_len", "num_tokens", "top_k"))
def _sample(
    cfg: ModelConfig, params, buffer_T, rng, temperature, *, prompt_len: int, num_tokens: int, top_k: int | None
):
    total = buffer_T.shape[0]
    window = min(total, cfg.block_size)
    model = GPT(cfg)

    def body(i, carry):
        buf, rng = carry
        pos = prompt_len + i  # index of the token being produced
        start = jnp.clip(pos - window, 0, total - window)
        ctx = jax.lax.dynamic_slice(buf, (start,), (window,))
        logits = model.apply({"params": params}, ctx[None])[0, pos - 1 - start]
        logits = logits / jnp.maximum(temperature, 1e-6)
        if top_k is not None and top_k < logits.shape[-1]:
            kth = jax.lax.top_k(logits, top_k)[0][-1]
            logits = jnp.where(logits < kth, -jnp.inf, logits)
        rng, sub = jax.random.split(rng)
        token = jax.random.categorical(sub, logits).astype(buf.dtype)
        return buf.at[pos].set(token), rng

    buf, _ = jax.lax.fori_loop(0, num_tokens, body, (buffer_T, rng))
    return buf


def sample(
    cfg: ModelConfig,
    params,
    prompt_ids,
    num_tokens: int,
    *,
    seed: int = 0,
    temperature: float = 1.0,
    top_k: int | None = None,
) -> np.ndarray:
    """Returns the `num_tokens` new token ids (int32) that follow `prompt_ids` (1-D, non-empty)."""
    prompt = np.asarray(prompt_ids, np.int32).reshape(-1)
    if prompt.size == 0:
        raise ValueError("sampling needs a non-empty prompt; e.g. a newline token")
    buffer = np.zeros(prompt.size + num_tokens, np.int32)
    buffer[: prompt.size] = prompt
    out = _sample(
        cfg,
        params,
        jnp.asarray(buffer),
        jax.random.key(seed),
        jnp.float32(temperature),
        prompt_len=int(prompt.size),
        num_tokens=int(num_tokens),
        top_k=top_k,
    )
    return np.asarray(out[prompt.size :])
