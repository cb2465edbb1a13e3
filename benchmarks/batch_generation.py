"""Host-side batch generation: TokenBatcher (random windows of a token array, as the LM task draws them).

  python -m benchmarks.batch_generation [--tokens=1000000] [--batch_size=64] [--block_size=256] \
      [--steps=100] [--repeats=3] [--quick]

One JSON line per shape: the best of --repeats timings of `batches(start, steps)` (one call building
`steps` steps' inputs/targets, as the trainer asks for a compiled call's worth), as ms per step,
tokens per second and MB of int32 batch per second. The batcher is warmed once first (numpy's first
gather pays page faults). The figure to compare with a train step's time: batch generation should
stay a small fraction of it (64 x 256 from 1M tokens: ~0.1 ms per step on the 2-core CPU host; the
unit test this replaced allowed 10 ms).

--quick: a small shape for smoke tests (seconds).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

# name: (tokens in the array, batch_size, block_size, steps per call)
CASES = {
    "default": (1_000_000, 64, 256, 100),
    "quick": (100_000, 8, 64, 10),
}


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench(tokens: int, batch_size: int, block_size: int, steps: int, repeats: int = 3, seed: int = 0) -> dict:
    """{shape..., ms_per_step, tokens_per_sec, mb_per_sec, repeats} of TokenBatcher.batches on random uint16 tokens."""
    from gpt_jax.data import TokenBatcher

    if repeats < 1 or steps < 1:
        raise ValueError(f"repeats={repeats} and steps={steps} must be >= 1")
    tokens_N = np.random.default_rng(seed).integers(0, 65, size=tokens).astype(np.uint16)
    batcher = TokenBatcher(tokens_N, batch_size=batch_size, block_size=block_size, seed=seed)
    out = batcher.batches(0, steps)  # warm-up
    assert out["inputs"].shape == (steps, batch_size, block_size), out["inputs"].shape
    best = min(_timed(lambda: batcher.batches(steps, steps)) for _ in range(repeats))
    per_step = best / steps
    step_tokens = batch_size * block_size
    return {
        "tokens": tokens,
        "batch_size": batch_size,
        "block_size": block_size,
        "steps_per_call": steps,
        "repeats": repeats,
        "ms_per_step": per_step * 1e3,
        "tokens_per_sec": step_tokens / per_step,
        "mb_per_sec": 2 * 4 * step_tokens / per_step / 1e6,  # inputs + targets, int32
    }


def main(argv: list[str]) -> int:
    default = CASES["default"]
    p = argparse.ArgumentParser(prog="python -m benchmarks.batch_generation", description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=default[0])
    p.add_argument("--batch_size", type=int, default=default[1])
    p.add_argument("--block_size", type=int, default=default[2])
    p.add_argument("--steps", type=int, default=default[3])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="a small shape, seconds (tests)")
    try:
        args = p.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    shape = CASES["quick"] if args.quick else (args.tokens, args.batch_size, args.block_size, args.steps)
    try:
        row = bench(*shape, repeats=args.repeats)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"bench": "batch_generation", **row}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
