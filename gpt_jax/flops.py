"""FLOPs per token and MFU: model FLOPs counted from the architecture, peak from the device."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import platform
import time

import jax
import jax.numpy as jnp

from gpt_jax.config import ModelConfig

log = logging.getLogger(__name__)


# Dense bf16 matmul peak per chip (FLOP/s, vendor datasheets) and JAX devices per chip: TPU v2/v3 and
# TPU7x show each of their two TensorCores as a device; v4/v5p join theirs into one (megacore).
@dataclasses.dataclass(frozen=True)
class Chip:
    name: str
    peak_bf16: float  # per chip
    devices_per_chip: int = 1
    f32_ratio: float = 0.5  # f32 matmul peak / bf16 peak (GPU: TF32 tensor cores)

    @property
    def peak_bf16_per_device(self) -> float:
        return self.peak_bf16 / self.devices_per_chip


# TPU `device_kind` strings, matched exactly (as jax/_src/pallas/mosaic/tpu_info.py does): v5p reports
# "TPU v5", v5e "TPU v5 lite", v6e "TPU v6 lite". On TPU, XLA's default precision runs f32 matmuls
# as one bf16 pass, so f32 gets the bf16 peak.
TPU_CHIPS = {
    "TPU v2": Chip("TPU v2", 45e12, devices_per_chip=2, f32_ratio=1.0),
    "TPU v3": Chip("TPU v3", 123e12, devices_per_chip=2, f32_ratio=1.0),
    "TPU v4": Chip("TPU v4", 275e12, f32_ratio=1.0),
    "TPU v5 lite": Chip("TPU v5e", 197e12, f32_ratio=1.0),
    "TPU v5e": Chip("TPU v5e", 197e12, f32_ratio=1.0),
    "TPU v5": Chip("TPU v5p", 459e12, f32_ratio=1.0),
    "TPU v5p": Chip("TPU v5p", 459e12, f32_ratio=1.0),
    "TPU v6 lite": Chip("TPU v6e", 918e12, f32_ratio=1.0),
    "TPU v6e": Chip("TPU v6e", 918e12, f32_ratio=1.0),
    "TPU7x": Chip("TPU7x", 2307e12, devices_per_chip=2, f32_ratio=1.0),
}

# GPU `device_kind` is the CUDA name (e.g. "NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-40GB"): first
# lower-case substring wins, so the more specific names come first ("a100" before "a10").
GPU_CHIPS = (
    ("b200", Chip("B200", 2250e12)),
    ("h200", Chip("H200", 989e12)),
    ("h100 pcie", Chip("H100 PCIe", 756e12)),
    ("h100 nvl", Chip("H100 NVL", 835e12)),
    ("h100", Chip("H100 SXM", 989e12)),
    ("a100", Chip("A100", 312e12)),
    ("l40s", Chip("L40S", 362e12)),
    ("l4", Chip("L4", 121e12)),
    ("a10", Chip("A10", 125e12)),
    ("v100", Chip("V100", 125e12, f32_ratio=0.125)),  # fp16 tensor cores (no bf16, no TF32)
)

# Causal attention: "full" counts the scores and weighted values over the whole sequence (nanoGPT,
# PaLM; what this repo's MFU figures use), "causal" counts the lower triangle only (MaxText, which
# halves it). Both are reported; `mfu` is always "full".
ATTENTION_CONVENTIONS = ("full", "causal")
MFU_ATTENTION = "full"


def chip_for(device_kind: str, platform: str = "tpu") -> Chip | None:
    """The table row for a JAX device's `device_kind`; None if it is not in the table."""
    if platform == "tpu":
        return TPU_CHIPS.get(device_kind)
    kind = device_kind.lower()
    return next((chip for key, chip in GPU_CHIPS if key in kind), None)


def attention_flops_per_token(cfg: ModelConfig, seq_len: int, attention: str = "full") -> float:
    """Forward FLOPs per token of the attention scores and weighted values (no projections)."""
    if attention not in ATTENTION_CONVENTIONS:
        raise ValueError(f"attention={attention!r} is not one of {ATTENTION_CONVENTIONS}")
    full = cfg.n_layer * 2 * 2 * seq_len * cfg.n_head * cfg.head_dim
    return full if attention == "full" else full / 2


def causal_discount(cfg, seq_len: int) -> float:
    """Forward FLOPs per token that the "causal" convention leaves out of a family's "full" count: half
    the causal LM's attention (a GPT's, or a VLM's `.lm`); 0 for models without one (ViT, DCGAN)."""
    lm = cfg if isinstance(cfg, ModelConfig) else getattr(cfg, "lm", None)
    return attention_flops_per_token(lm, seq_len, "causal") if isinstance(lm, ModelConfig) else 0.0


def matmul_flops_per_token(cfg: ModelConfig, seq_len: int, lm_head: bool = True, attention: str = "full") -> float:
    """Forward matmul FLOPs per token (2 per multiply-add); attention by `attention` convention (above).
    `lm_head=False`: no vocabulary projection (a task head on pooled features, whose FLOPs are negligible)."""
    d, h, g, k, f = cfg.n_embd, cfg.n_head, cfg.kv_heads, cfg.head_dim, cfg.ff_dim
    qkv = 2 * d * (h + 2 * g) * k
    out = 2 * h * k * d
    mlp = 2 * d * f * (3 if cfg.mlp == "swiglu" else 2)
    head = 2 * d * cfg.vocab_size if lm_head else 0
    return cfg.n_layer * (qkv + out + mlp) + attention_flops_per_token(cfg, seq_len, attention) + head


def train_flops_per_token(cfg: ModelConfig, seq_len: int, lm_head: bool = True, attention: str = "full") -> float:
    """Forward + backward (2x forward) = 3x forward."""
    return 3 * matmul_flops_per_token(cfg, seq_len, lm_head, attention)


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


def device_peak_flops(dtype: str = "float32", device: jax.Device | None = None) -> float:
    """Peak FLOP/s of one JAX device (of the default backend) for matmuls in `dtype`; per device, not per
    chip, so `x jax.device_count()` is the job's peak. NaN (and a warning) for a kind not in the table:
    set train.peak_flops."""
    dev = device or jax.devices()[0]
    if dev.platform == "cpu":
        return measured_cpu_peak(dtype) / jax.local_device_count()  # simulated devices share the cores
    chip = chip_for(dev.device_kind, dev.platform)
    if chip is None:
        _warn_unknown(dev.platform, dev.device_kind)
        return float("nan")
    return chip.peak_bf16_per_device * (1.0 if dtype == "bfloat16" else chip.f32_ratio)


@functools.cache
def _warn_unknown(backend: str, kind: str) -> None:
    log.warning("no peak FLOP/s for %s device %r: MFU is NaN; set train.peak_flops (per device)", backend, kind)


def mfu(
    tokens_per_sec: float, cfg: ModelConfig, seq_len: int, peak_flops_total: float, attention: str = "full"
) -> float:
    return tokens_per_sec * train_flops_per_token(cfg, seq_len, attention=attention) / peak_flops_total
