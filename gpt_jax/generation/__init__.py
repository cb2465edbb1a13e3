"""Generation internals: options, prompt packing, placement, logits processors, the compiled
prefill/decode loops, beam search, and the `generate` / `stream` entry points; `multimodal` runs the
vlm family (images + prompt prefilled from embeddings, then the same decode loop).

The public API is the facade `gpt_jax.generate` (generate, stream, GenerateOptions). Submodules import
each other directly; this package imports none of them.
"""
