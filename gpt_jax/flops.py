"""FLOPs per token and MFU: model FLOPs counted from the architecture, peak from the device."""

from __future__ import annotations

import functools
import json
import os
import platform
import time

import jax
import jax.numpy as jnp

from gpt_jax.config import ModelConfig

# Dense peak per chip (FLOP/s) for bf16 matmuls, from vendor datasheets.
ACCELERATOR_PEAK_BF16 = {
    "h200": 989e12,
    "h100": 989e12,
    "a100": 312e12,
    "l4": 121e12,
    "a10": 125e12,
    "v100": 125e12,
    "tpu v6": 918e12,
    "tpu v5p": 459e12,
    "tpu v5 lite": 197e12,
    "tpu v5e": 197e12,
    "tpu v4": 275e12,
    "tpu v3": 123e12,
}


def matmul_flops_per_token(cfg: ModelConfig, seq_len: int, lm_head: bool = True) -> float:
    """Forward matmul FLOPs per token (2 per multiply-add), attention counted at full (not causal) length
    like nanoGPT/PaLM so MFU figures compare. `lm_head=False`: no vocabulary projection (a task head
    on pooled features, whose FLOPs are negligible)."""
    d, h, g, k, f = cfg.n_embd, cfg.n_head, cfg.kv_heads, cfg.head_dim, cfg.ff_dim
    qkv = 2 * d * (h + 2 * g) * k
    out = 2 * h * k * d
    mlp = 2 * d * f * (3 if cfg.mlp == "swiglu" else 2)
    attention = 2 * 2 * seq_len * h * k  # scores and weighted values
    head = 2 * d * cfg.vocab_size if lm_head else 0
    return cfg.n_layer * (qkv + out + mlp + attention) + head


def train_flops_per_token(cfg: ModelConfig, seq_len: int, lm_head: bool = True) -> float:
    """Forward + backward (2x forward) = 3x forward."""
    return 3 * matmul_flops_per_token(cfg, seq_len, lm_head)


@functools.cache
def measured_cpu_peak(dtype: str = "float32", n: int = 1024, repeats: int = 10) -> float:
    """Practical matmul peak of this CPU (all cores), measured once per process (~0.1-0.5 s).

    CPUs differ a lot (e.g. AVX2 Zen 3 ~130-180 GFLOP/s on 2 cores vs AVX-512 Zen 5 ~440), so a
    table would lie; bf16 is measured with float32 accumulation, the mode our matmuls use. Best of
    `repeats` because shared hosts are noisy and the peak is what the hardware can do.
    """
    dt = jnp.dtype(dtype)
    a = jnp.ones((n, n), dt)
    f = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
    f(a, a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        f(a, a).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return _best_seen(f"{cpu_model()} x{cpu_count()} {dtype}", 2 * n**3 / best)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def cpu_count() -> int:
    """Cores this process may run on (its affinity), which is what XLA's CPU threads get."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _best_seen(key: str, measured: float) -> float:
    """The highest peak this machine has shown, kept in ~/.cache/gpt_jax/cpu_peak.json: a peak measured
    while other jobs share the cores comes out low and would inflate MFU (even past 100%)."""
    path = os.path.join(os.path.expanduser("~/.cache/gpt_jax"), "cpu_peak.json")
    try:
        with open(path, encoding="utf-8") as f:
            seen = json.load(f)
    except (OSError, ValueError):
        seen = {}
    best = max(measured, float(seen.get(key, 0.0)))
    if best > float(seen.get(key, 0.0)):
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump({**seen, key: best}, f, indent=1)
            os.replace(tmp, path)  # atomic: concurrent runs never read half a file
        except OSError:
            pass  # read-only home: the peak is still this run's measurement
    return best


def device_peak_flops(dtype: str = "float32") -> float:
    """Peak FLOP/s of one device of the default backend for matmuls in `dtype`."""
    dev = jax.devices()[0]
    if dev.platform == "cpu":
        return measured_cpu_peak(dtype) / jax.local_device_count()  # simulated devices share the cores
    kind = dev.device_kind.lower()
    for name, peak in ACCELERATOR_PEAK_BF16.items():
        if name in kind:
            return peak if dtype == "bfloat16" else peak / 2  # TF32/f32 paths: ~half the bf16 rate
    return float("nan")


def mfu(tokens_per_sec: float, cfg: ModelConfig, seq_len: int, peak_flops_total: float) -> float:
    return tokens_per_sec * train_flops_per_token(cfg, seq_len) / peak_flops_total
