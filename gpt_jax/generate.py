"""Text generation with a KV cache: `generate` (all new tokens at once) and `stream` (chunk by chunk).

  from gpt_jax.generate import GenerateOptions, generate, stream
  opts = GenerateOptions(max_new_tokens=100, temperature=0.8, top_k=50)
  new_ids_BxN = generate(model_config, params, prompt_ids_BxL, opts)
  for ids_BxC in stream(model_config, params, prompt_ids_BxL, opts.replace(chunk=8)): ...

Strategies (Hugging Face `generate` semantics): greedy (temperature=0), sampling with temperature,
top_k, top_p, min_p; beam search (num_beams, length_penalty, early_stopping); repetition_penalty;
banned_ids; stop_ids (the stop token is kept, later positions get pad_id); stop_strings (checked on
the host between chunks, so they need `decode`); seed makes sampling reproducible, whatever the
chunking. All of them are fields of one `GenerateOptions`, validated on construction.

Compilation: prompts are LEFT-padded to a length bucket (powers of two from 16) and the cache holds
bucket + max_new_tokens slots, so calls that share (batch, bucket, max_new_tokens, strategy, which
filters are on) reuse one program: prompt lengths within the bucket, temperature, top_k values
within their power-of-two bound, top_p, min_p, penalties and token lists are all traced.

Output: int32 numpy [B, max_new_tokens]: new tokens only; rows that stopped hold `pad_id` (default
-1, never a token id) after their stop token. With num_beams > 1 each row is its best beam.

This module is the public facade; the engine lives in gpt_jax.generation (options, prompts,
placement, processors, decode, beam, engine, stream).
"""

from __future__ import annotations

from gpt_jax.generation.engine import generate
from gpt_jax.generation.options import PAD_ID, GenerateOptions, undecodable_ids
from gpt_jax.generation.stream import stream

__all__ = ["PAD_ID", "GenerateOptions", "generate", "stream", "undecodable_ids"]
