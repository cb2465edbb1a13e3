"""Training throughput (tokens/s, MFU) of a config's real train step, steady state, compile excluded.

  python -m benchmarks.train_throughput --config=configs/shakespeare_char_cpu.py [--config.x=y ...] [--steps=200]

Uses the same Trainer (data, sharded jitted scan of steps, donation) as `gpt_jax.main`; prints one
JSON line. Set XLA_FLAGS=--xla_force_host_platform_device_count=N before running to treat CPU cores
as N data-parallel devices.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time

USAGE = "usage: python -m benchmarks.train_throughput --config=configs/<name>.py [--config.x=y ...] [--steps=200]"


def measure(config, steps: int, rounds: int = 3) -> dict:
    """Median seconds per step over `rounds` timed rounds of ~steps/rounds steps each, after one
    compiling call; also the model's FLOP rate, MFU against the device peak, and the train state size."""
    import jax

    from gpt_jax import flops
    from gpt_jax.trainer import Trainer

    with tempfile.TemporaryDirectory() as workdir:
        tr = Trainer(config, workdir)
        cfg, t = tr.model_cfg, config.train
        state = tr.init_state()
        k = min(t.steps_per_call, steps)
        t0 = time.perf_counter()
        state, m = tr.run_steps(state, 0, k)  # compile + first call
        jax.block_until_ready(m)
        compile_s = time.perf_counter() - t0
        state_bytes = sum(getattr(x, "nbytes", 0) for x in jax.tree.leaves(state))  # params + optimizer state
        per_round = max(1, steps // k // rounds)
        times = []
        step = k
        for _ in range(rounds):
            batches = [tr.batches(step + i * k, k) for i in range(per_round)]  # host work outside the timer
            t0 = time.perf_counter()
            for b in batches:
                with tr.rules():
                    state, m = tr.train_fn(state, b)
            jax.block_until_ready(m)
            times.append((time.perf_counter() - t0) / (per_round * k))
            step += per_round * k
    sec = statistics.median(times)
    tokens = t.batch_size * cfg.block_size
    peak = (t.peak_flops or flops.device_peak_flops(cfg.dtype)) * jax.device_count()
    tps = tokens / sec
    return {
        "ms_per_step": sec * 1e3,
        "tokens_per_sec": tps,
        "mfu": tps * flops.train_flops_per_token(cfg, cfg.block_size) / peak,
        "peak_flops": peak,
        "gflops_per_sec": tps * flops.train_flops_per_token(cfg, cfg.block_size) / 1e9,
        "compile_s": compile_s,
        "devices": jax.device_count(),
        "dtype": cfg.dtype,
        "shape": f"{cfg.n_layer}L/{cfg.n_head}H/{cfg.n_embd}D",
        "n_params": sum(x.size for x in jax.tree.leaves(state.params)),
        "batch_size": t.batch_size,
        "block_size": cfg.block_size,
        "state_bytes": state_bytes,
        "steps_per_call": k,
        "timed_steps": len(times) * per_round * k,
    }


def main(argv):
    from gpt_jax import run_config
    from gpt_jax.cli import flags

    config, values = flags.parse(argv, [flags.Flag("steps", int, 60, "timed steps")], usage=USAGE, config=True)
    steps = values["steps"]
    config.sample.num_tokens = 0
    run_config.apply_cpu_devices(config)
    result = measure(config, steps)
    print(json.dumps({"config": [a for a in argv if a.startswith("--config")], **result}))


if __name__ == "__main__":
    main(sys.argv[1:])
