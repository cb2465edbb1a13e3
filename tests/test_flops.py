"""The MFU device table (gpt_jax.flops): one case per device kind, with the `device_kind` strings JAX
reports (jax/_src/pallas/mosaic/tpu_info.py; CUDA names for GPUs), per device vs per chip, and the two
causal-attention FLOPs conventions."""

from __future__ import annotations

import dataclasses
import math

import pytest

from gpt_jax import flops
from gpt_jax.config import ModelConfig


@dataclasses.dataclass
class FakeDevice:
    platform: str
    device_kind: str


# (platform, device_kind as JAX reports it, bf16 peak per JAX device, devices per chip)
KINDS = [
    ("tpu", "TPU v2", 22.5e12, 2),  # the free Colab TPU v2-8: 4 chips, 8 devices
    ("tpu", "TPU v3", 61.5e12, 2),
    ("tpu", "TPU v4", 275e12, 1),  # megacore: one device per chip
    ("tpu", "TPU v5 lite", 197e12, 1),  # v5e
    ("tpu", "TPU v5e", 197e12, 1),
    ("tpu", "TPU v5", 459e12, 1),  # v5p (the key "tpu v5p" used to miss it)
    ("tpu", "TPU v5p", 459e12, 1),
    ("tpu", "TPU v6 lite", 918e12, 1),  # v6e
    ("tpu", "TPU7x", 1153.5e12, 2),  # Ironwood: 2,307 TFLOP/s per chip, two devices
    ("gpu", "NVIDIA A100-SXM4-40GB", 312e12, 1),
    ("gpu", "NVIDIA A100-PCIE-40GB", 312e12, 1),
    ("gpu", "NVIDIA H100 80GB HBM3", 989e12, 1),
    ("gpu", "NVIDIA H100 PCIe", 756e12, 1),
    ("gpu", "NVIDIA H200", 989e12, 1),
    ("gpu", "NVIDIA B200", 2250e12, 1),
    ("gpu", "NVIDIA L4", 121e12, 1),
    ("gpu", "NVIDIA A10", 125e12, 1),
]


@pytest.mark.parametrize("platform,kind,per_device,per_chip_devices", KINDS, ids=[k[1] for k in KINDS])
def test_peak_per_device(platform, kind, per_device, per_chip_devices):
    dev = FakeDevice(platform, kind)
    assert flops.device_peak_flops("bfloat16", device=dev) == pytest.approx(per_device)
    chip = flops.chip_for(kind, platform)
    assert chip.devices_per_chip == per_chip_devices
    assert chip.peak_bf16 == pytest.approx(per_device * per_chip_devices)
    f32 = flops.device_peak_flops("float32", device=dev)
    # TPU runs f32 matmuls as one bf16 pass by default; GPUs use TF32 tensor cores at half the bf16 rate
    assert f32 == pytest.approx(per_device if platform == "tpu" else per_device / 2)


def test_v2_8_job_peak_counts_chips_once():
    """A v2-8 (4 chips x 2 devices): the job's peak is 4 x 45 TFLOP/s, not 8 x 45."""
    per_device = flops.device_peak_flops("bfloat16", device=FakeDevice("tpu", "TPU v2"))
    assert per_device * 8 == pytest.approx(4 * 45e12)


@pytest.mark.parametrize("kind", ["TPU v9 future", "TPU v5 litex", "tpu v5"])
def test_unknown_tpu_kind_is_nan_not_a_neighbour(kind, caplog):
    """TPU kinds match exactly: a new or misspelled kind is NaN (with a warning), never a prefix's peak."""
    assert math.isnan(flops.device_peak_flops("bfloat16", device=FakeDevice("tpu", kind)))
    assert "set train.peak_flops" in caplog.text


def test_unknown_gpu_kind_is_nan():
    assert math.isnan(flops.device_peak_flops("bfloat16", device=FakeDevice("gpu", "Some Future GPU")))


def test_gpu_names_match_most_specific_first():
    assert flops.chip_for("NVIDIA A100 80GB PCIe", "gpu").name == "A100"  # not A10
    assert flops.chip_for("NVIDIA L40S", "gpu").name == "L40S"  # not L4
    assert flops.chip_for("NVIDIA H100 NVL", "gpu").name == "H100 NVL"


CFG = ModelConfig(n_layer=2, n_head=4, n_embd=64, block_size=128, vocab_size=65)


def test_causal_convention_halves_only_attention():
    seq = 128
    full = flops.matmul_flops_per_token(CFG, seq)
    causal = flops.matmul_flops_per_token(CFG, seq, attention="causal")
    attn = CFG.n_layer * 2 * 2 * seq * CFG.n_head * CFG.head_dim  # scores + weighted values
    assert full - causal == pytest.approx(attn / 2)
    assert flops.causal_discount(CFG, seq) == pytest.approx(attn / 2)
    assert flops.train_flops_per_token(CFG, seq, attention="causal") == pytest.approx(3 * causal)
    assert flops.mfu(1000.0, CFG, seq, 1e12, attention="causal") < flops.mfu(1000.0, CFG, seq, 1e12)
    with pytest.raises(ValueError, match="not one of"):
        flops.matmul_flops_per_token(CFG, seq, attention="half")


def test_causal_discount_reaches_a_vlm_lm_and_skips_non_causal_models():
    vlm_like = dataclasses.make_dataclass("VLMLike", [("lm", ModelConfig)])(CFG)
    assert flops.causal_discount(vlm_like, 64) == flops.causal_discount(CFG, 64) > 0
    assert flops.causal_discount(object(), 64) == 0.0  # e.g. a ViT or DCGAN config


def test_training_summary_states_the_convention(tiny_run):
    """summary.json says which convention "mfu" uses and gives the other (the tiny run of conftest)."""
    _, _, summary = tiny_run
    assert summary["mfu_attention"] == flops.MFU_ATTENTION == "full"
    assert 0 < summary["mfu_causal"] < summary["mfu"]
