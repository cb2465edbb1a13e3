"""The int8 KV cache (gpt_jax.compression.kv_int8): int8 storage with per-token/head scales, decode
logits close to the float cache's, greedy generation through the real decode program."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gpt_jax.compression.kv_int8 import Int8KV, quantize, with_int8_kv
from gpt_jax.config import ModelConfig
from gpt_jax.kv_cache import init_cache
from gpt_jax.model import GPT, init_params

CFG = ModelConfig(n_layer=2, n_head=4, n_embd=64, block_size=32, vocab_size=65)


def test_quantize_per_token_error_within_half_a_step():
    x = jax.random.normal(jax.random.key(0), (2, 4, 5, 16)) * jnp.linspace(0.1, 5, 5)[:, None]
    q, s = quantize(x, 3)
    assert q.dtype == jnp.int8 and s.shape == (2, 4, 5, 1)
    assert bool((jnp.abs(q * s - x) <= s / 2 * (1 + 1e-6)).all())


def test_int8_cache_logits_close_to_float_cache():
    params = nn.meta.unbox(init_params(CFG, jax.random.key(0)))
    ids = jax.random.randint(jax.random.key(1), (2, 24), 0, CFG.vocab_size)

    def run(cfg):
        step = jax.jit(lambda x, cache: GPT(cfg).apply({"params": params}, x, cache=cache))
        logits, cache = step(ids[:, :8], init_cache(cfg, 2, 24))  # prefill 8
        out = [logits]
        for t in range(8, 24):  # then one token at a time, reading the cache
            logits, cache = step(ids[:, t : t + 1], cache)
            out.append(logits)
        return jnp.concatenate(out, 1), cache

    ref, fcache = run(CFG)
    got, qcache = run(with_int8_kv(CFG))
    assert isinstance(qcache.k[0], Int8KV) and qcache.k[0].q.dtype == jnp.int8
    assert qcache.k[0].q.nbytes * 4 == fcache.k[0].nbytes  # a quarter of the float32 cache (+ scales)
    np.testing.assert_array_equal(got[:, :8], ref[:, :8])  # the prefill attends its own fresh k/v
    # stated tolerance: the cached-token logits move by < 1% of their spread (per-token absmax int8)
    err = float(jnp.abs(got[:, 8:] - ref[:, 8:]).max())
    assert 0 < err < 0.01 * float(ref.std())


def test_generate_with_int8_cache_matches_float_greedy():
    from gpt_jax.generation.engine import generate  # lazy: only this test
    from gpt_jax.generation.options import GenerateOptions  # lazy: only this test

    params = nn.meta.unbox(init_params(CFG, jax.random.key(0)))
    o = GenerateOptions(max_new_tokens=8, temperature=0)
    ref = generate(CFG, params, [[1, 2, 3, 4]], o)
    got = generate(with_int8_kv(CFG), params, [[1, 2, 3, 4]], o)
    np.testing.assert_array_equal(got, ref)
