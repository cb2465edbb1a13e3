"""Decode throughput of int8 weight-only params (gpt_jax.compression) vs float32, side by side.

  python -m benchmarks.quant_decode [--cases=gpt2,shakespeare] [--batches=1,16] [--repeats=3] [--workdir=W]
      [--variants=float32,int8,w8a8|stored]   (peak_rss_mb compares variants only when each runs in its own process)

Same program (gpt_jax.generation's compiled prefill + KV-cache decode, greedy), same random weights
(or a trained run's with --workdir: its float params and their int8 quantization), the two variants
timed alternately so host noise hits both. `--variants=stored --workdir=W` decodes W's params exactly as
`load_run` gives them (a compressed workdir's in-memory form: int8 kernels stay int8, int4 is dequantized,
pruned runs are dense), alone in its process, so peak_rss_mb is that workdir's. int8: per-channel QuantizedTensor weights (every kernel and
the tied embedding) read as int8 inside each matmul of the decode loop (gpt_jax.compression.qtensor);
w8a8: the same with the activations quantized per token to int8 (int8 x int8 dots). One JSON line per
(model, batch, variant): decode tokens/s, ms/token, weight bytes the decode reads per token, and the
int8/float32 speed ratio. Decoding at batch 1 is memory-bound: every token reads every weight once.
"""

from __future__ import annotations

import functools
import json
import os
import resource
import sys
import time

import flax.linen as nn
import jax
import numpy as np

from benchmarks.decode import CASES, _median_time


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (run one variant per process to compare variants)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def weight_bytes(params) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params))


VARIANTS = ("float32", "int8", "w8a8", "stored")


def variants(cfg, params, names=VARIANTS):
    from gpt_jax.compression.quantize import QuantSpec, quantize_params, restore  # lazy: heavy, only here

    q = functools.cache(lambda: quantize_params(params, QuantSpec(8)))  # once, only for an int8 variant

    make = {
        "float32": lambda: jax.device_put(params),
        "stored": lambda: jax.device_put(params),  # the workdir's own params, as loaded
        "int8": lambda: jax.device_put(restore(*q(), 8)),
        "w8a8": lambda: jax.device_put(restore(*q(), 8, act_bits=8)),
    }
    return {name: make[name]() for name in names}


def bench(case: str, batch: int, repeats: int, workdir: str | None = None, names=VARIANTS) -> list[dict]:
    from gpt_jax.config import ModelConfig
    from gpt_jax.generation import decode as dec
    from gpt_jax.generation.options import GenerateOptions
    from gpt_jax.generation.processors import knobs_of, mode_of
    from gpt_jax.generation.prompts import pack
    from gpt_jax.model import init_params

    shape, prompt, new = CASES[case]
    if workdir:
        from gpt_jax.workdir import load_run

        _, cfg, params, _ = load_run(workdir)
        params = jax.device_get(params)
    else:
        cfg = ModelConfig(**shape)
        params = jax.device_get(jax.jit(lambda: nn.meta.unbox(init_params(cfg, jax.random.key(0))))())
    rows = np.random.default_rng(0).integers(0, cfg.vocab_size, (batch, prompt))
    o = GenerateOptions(max_new_tokens=new, temperature=0)
    prompt_BxP, start_B = pack(cfg, list(rows), new)
    mode, knobs, key = mode_of(o, cfg.vocab_size), knobs_of(o, cfg.vocab_size), jax.random.key(0)
    prompt_BxP, start_B, knobs = jax.device_put((prompt_BxP, start_B, knobs))
    cache_len = prompt_BxP.shape[1] + new
    runs = {}
    for name, p in variants(cfg, params, names).items():
        args = (p, prompt_BxP, start_B, knobs, key)
        prefill = lambda args=args: jax.block_until_ready(dec.prefill_jit(cfg, mode, cache_len, *args))
        program = lambda args=args: jax.block_until_ready(dec.generate_jit(cfg, mode, cache_len, new, *args))
        program(), prefill()  # compile
        runs[name] = (p, prefill, program)
    times = {name: ([], [], []) for name in runs}
    for _ in range(repeats):  # alternate the variants: noise from other jobs lands on both
        for name, (_, prefill, program) in runs.items():
            times[name][0].append(_median_time(prefill, 1, 0.5))
            times[name][1].append(_median_time(program, 1, 1.0))
            # CPU seconds of this process per decode program: less sensitive than wall time to other jobs
            # taking the cores (a stalled memory read still counts as CPU time)
            c0 = time.process_time()
            program()
            times[name][2].append(time.process_time() - c0)
    out = []
    for name, (p, _, _) in runs.items():
        prefill_s, total_s = float(np.median(times[name][0])), float(np.median(times[name][1]))
        decode_s = total_s - prefill_s
        cpu_s = float(np.median(times[name][2]))
        out.append(
            {
                "model": workdir or case,
                "batch": batch,
                "variant": name,
                "decode_tokens_per_sec": batch * (new - 1) / decode_s,
                "ms_per_token": decode_s / (new - 1) * 1e3,
                "program_cpu_s": cpu_s,  # prefill + decode, all threads
                "peak_rss_mb": peak_rss_mb(),
                "weight_bytes": weight_bytes(p),
                "backend": jax.default_backend(),
            }
        )
    base = out[0]["decode_tokens_per_sec"]  # the first variant named (float32 by default)
    for row in out:
        row["speedup_vs_float32"] = row["decode_tokens_per_sec"] / base
    return out


def main(argv: list[str]) -> int:
    flags = dict(a[2:].split("=", 1) if "=" in a else (a[2:], "1") for a in argv if a.startswith("--"))
    cases = flags.get("cases", "gpt2").split(",")
    batches = [int(b) for b in flags.get("batches", "1,16").split(",")]
    names = tuple(flags.get("variants", ",".join(VARIANTS)).split(","))
    if unknown := set(names) - set(VARIANTS):
        print(f"--variants: unknown {sorted(unknown)}; choose from {list(VARIANTS)}", file=sys.stderr)
        return 2
    if "stored" in names and ("workdir" not in flags or len(names) > 1):
        print(
            "--variants=stored decodes a workdir's own params: give --workdir=W and no other variant", file=sys.stderr
        )
        return 2
    for case in cases:
        for batch in batches:
            for row in bench(case, batch, int(flags.get("repeats", 3)), flags.get("workdir"), names):
                print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main(sys.argv[1:]))
