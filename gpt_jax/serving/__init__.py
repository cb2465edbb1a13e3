"""An OpenAI-compatible server over continuous batching (see gpt_jax.cli.serve).

slots (compiled: B slots over one KV cache) -> batcher (host thread: jobs join and leave between
chunks) -> service (prompts, limits, safety, scoring) -> app (FastAPI routes) -> runner (uvicorn).
Submodules import each other directly; this package imports none of them.
"""
