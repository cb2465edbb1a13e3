"""The batcher's ring KV cache and pipelined chunks, without HTTP: greedy jobs that wrap the ring, are
inserted across its end and hand their slot over before their last chunk is read, each decode exactly
what a full forward pass of their own sequence picks."""

import threading

import numpy as np
import pytest

WINDOW, CHUNK = 32, 4


@pytest.fixture(scope="module")
def model():
    import flax.linen as nn
    import jax

    from gpt_jax.config import ModelConfig
    from gpt_jax.model import init_params

    cfg = ModelConfig(vocab_size=24, block_size=64, n_layer=2, n_head=2, n_embd=32)
    return cfg, nn.meta.unbox(init_params(cfg, jax.random.key(1)))


def run_jobs(model, slots, specs):
    """Greedy jobs (prompt, max_tokens) through a Batcher; returns (jobs, chunks dispatched, batcher)."""
    from gpt_jax.serving.batcher import Batcher, Job, Limits

    cfg, params = model
    done = threading.Semaphore(0)
    b = Batcher(
        cfg, params, lambda ids: " ".join(map(str, ids)), limits=Limits(slots=slots, window=WINDOW, chunk=CHUNK)
    )
    dispatched = []
    real = b._dispatch
    b._dispatch = lambda: dispatched.append(1) or real()
    jobs = []
    for prompt, max_tokens in specs:
        sink = lambda piece: piece.finish and done.release()
        jobs.append(Job(prompt=prompt, max_tokens=max_tokens, sink=sink, temperature=0.0, logprobs=True))
    b.submit(jobs)
    for _ in jobs:
        assert done.acquire(timeout=120), "a job never finished"
    b.close()
    return jobs, len(dispatched), b


def test_ring_wraps_and_matches_a_full_forward(model):
    """2 slots, window 32: the write index wraps about 4 times and later prompts straddle its end."""
    import jax

    from gpt_jax.serving import slots as sl

    cfg, params = model
    rng = np.random.default_rng(0)
    specs = [(rng.integers(0, 24, n).tolist(), m) for n, m in [(3, 5), (12, 17), (7, 9), (10, 22), (5, 13), (9, 11)]]
    before = sl.step_jit._cache_size()  # process-wide: other files' models may be in it already
    jobs, _, b = run_jobs(model, 2, specs)
    assert b.compilations()["step"] - before <= 1  # one compile for every chunk, however the ring wraps
    for job, (prompt, max_tokens) in zip(jobs, specs):
        assert len(job.out) == max_tokens and job.done
        seq = np.zeros((1, WINDOW), np.int32)
        seq[0, : len(prompt) + max_tokens] = prompt + job.out
        chosen, _, top_id = map(np.asarray, sl.score_jit(cfg, jax.device_put(params), seq))
        at = np.arange(len(prompt) - 1, len(prompt) - 1 + max_tokens)  # the positions that chose job.out
        np.testing.assert_array_equal(top_id[0, at, 0], job.out)  # greedy = the full pass's argmax
        np.testing.assert_allclose([lp for lp, _ in job.lps], chosen[0, at], atol=2e-5)


def test_a_slot_passes_to_the_next_job_without_an_idle_chunk(model):
    """1 slot, chunk 4, max_tokens 8: each job is 1 prefill token + 2 chunks, and the next job is
    inserted while the previous one's last chunk is still unread: 6 chunks for 3 jobs, not 9."""
    specs = [([1, 2, 3], 8), ([4, 5], 8), ([6], 8)]
    jobs, dispatched, _ = run_jobs(model, 1, specs)
    assert [len(j.out) for j in jobs] == [8, 8, 8]
    assert dispatched == 6
