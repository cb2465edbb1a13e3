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


class StepTimer:
    """A Trainer's real jitted K-step call, compiled once, timed in rounds (the state carries over).

    `time(steps)` -> (wall seconds per step, this process's CPU seconds per step): CPU time beside wall
    time tells a slow step from a host that is busy with other jobs.
    """

    def __init__(self, config, workdir: str):
        import jax

        from gpt_jax.trainer import Trainer

        self.tr = Trainer(config, workdir)
        self.state = self.tr.init_state()
        self.k = config.train.steps_per_call
        self.step = 0
        t0 = time.perf_counter()
        self.state, m = self.tr.run_steps(self.state, 0, self.k)  # compile + first call
        jax.block_until_ready(m)
        self.compile_s = time.perf_counter() - t0
        self.step = self.k

    def time(self, steps: int) -> tuple[float, float]:
        import jax

        calls = max(1, steps // self.k)
        batches = [self.tr.batches(self.step + i * self.k, self.k) for i in range(calls)]  # host work untimed
        t0, c0 = time.perf_counter(), time.process_time()
        for b in batches:
            with self.tr.rules():
                self.state, m = self.tr.train_fn(self.state, b)
        jax.block_until_ready(m)
        n = calls * self.k
        self.step += n
        return (time.perf_counter() - t0) / n, (time.process_time() - c0) / n


def measure(config, steps: int, rounds: int = 3) -> dict:
    """Median seconds per step over `rounds` timed rounds of ~steps/rounds steps each, after one
    compiling call; also the model's FLOP rate, MFU against the device peak, and the train state size."""
    import jax

    from gpt_jax import flops

    config.train.steps_per_call = min(config.train.steps_per_call, steps)
    with tempfile.TemporaryDirectory() as workdir:
        timer = StepTimer(config, workdir)
        cfg, t, k, state = timer.tr.model_cfg, config.train, timer.k, timer.state
        state_bytes = sum(getattr(x, "nbytes", 0) for x in jax.tree.leaves(state))  # params + optimizer state
        per_round = max(1, steps // k // rounds)
        wall, cpu = zip(*(timer.time(per_round * k) for _ in range(rounds)), strict=True)
        n_params = sum(x.size for x in jax.tree.leaves(timer.state.params))
    sec = statistics.median(wall)
    tokens = t.batch_size * cfg.block_size
    peak = (t.peak_flops or flops.device_peak_flops(cfg.dtype)) * jax.device_count()
    tps = tokens / sec
    return {
        "ms_per_step": sec * 1e3,
        "cpu_ms_per_step": statistics.median(cpu) * 1e3,
        "tokens_per_sec": tps,
        "mfu": tps * flops.train_flops_per_token(cfg, cfg.block_size) / peak,
        "peak_flops": peak,
        "gflops_per_sec": tps * flops.train_flops_per_token(cfg, cfg.block_size) / 1e9,
        "compile_s": timer.compile_s,
        "devices": jax.device_count(),
        "dtype": cfg.dtype,
        "shape": f"{cfg.n_layer}L/{cfg.n_head}H/{cfg.n_embd}D",
        "n_params": n_params,
        "batch_size": t.batch_size,
        "block_size": cfg.block_size,
        "state_bytes": state_bytes,
        "steps_per_call": k,
        "timed_steps": len(wall) * per_round * k,
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
