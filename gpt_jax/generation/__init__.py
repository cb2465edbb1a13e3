"""Generation internals: logits processors, the compiled prefill/decode loops, beam search.

The public API is `gpt_jax.generate` (generate, stream).
"""
