"""Fused attention kernels (gpt_jax.attention_kernels) against the einsum reference.

On CPU: splash attention in Pallas interpret mode (the same kernel code a TPU runs), the cuDNN path's
calls run with implementation='xla', and the dispatch/errors. On a GPU/TPU: the real kernels
(`-m accelerator`, run by benchmarks/device_check.sh).

Tolerances: float32 compute, max |diff| <= 2e-5 (outputs are O(1)); gradients 1e-4; bf16 (accelerator
tests) 2e-2 relative to max |reference| (bf16 has an 8-bit mantissa).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpt_jax import attention, attention_kernels
from gpt_jax.attention import dot_product_attention, einsum_attention, resolve_attention
from gpt_jax.attention_kernels import fused_attention, segments_from_mask
from gpt_jax.masks import attention_mask

B, H, L, K = 2, 4, 128, 16  # splash tiles are 128 long: the smallest length it takes
F32 = jnp.float32


def qkv(g: int, seed: int = 0, length: int = L):
    r = np.random.default_rng(seed)
    q = jnp.asarray(r.standard_normal((B, H, length, K)), F32)
    k, v = (jnp.asarray(r.standard_normal((B, g, length, K)), F32) for _ in range(2))
    return q, k, v


def mask_of(kind: str, length: int = L) -> jax.Array:
    batch = {"inputs": jnp.zeros((B, length), jnp.int32)}
    if kind == "packed":  # row 0: three examples then padding (segment 0); row 1: two examples
        seg = np.zeros((B, length), np.int32)
        seg[0, :50], seg[0, 50:90], seg[0, 90:120] = 1, 2, 3
        seg[1, :70], seg[1, 70:] = 1, 2
        batch["segment_ids"] = jnp.asarray(seg)
    if kind == "prefix":  # prefix LM: not causal, the kernels must hand it to the reference
        batch["prefix_len"] = jnp.asarray([10, 37], jnp.int32)
    return attention_mask(batch, length)


def max_diff(a, b) -> float:
    return float(jnp.max(jnp.abs(jnp.asarray(a, F32) - jnp.asarray(b, F32))))


# ----------------------------------------------------------------------------- segments from the mask


def test_segments_from_mask():
    seg, exact = segments_from_mask(mask_of("causal"))
    assert bool(exact) and np.all(np.asarray(seg) == 1)
    seg, exact = segments_from_mask(mask_of("packed"))
    assert bool(exact)
    want = np.zeros((B, L), np.int32)
    want[0, :50], want[0, 50:90], want[0, 90:120], want[0, 120:] = 1, 2, 3, 4  # padding: its own segment
    want[1, :70], want[1, 70:] = 1, 2
    np.testing.assert_array_equal(np.asarray(seg), want)
    _, exact = segments_from_mask(mask_of("prefix"))
    assert not bool(exact)
    full = jnp.ones((B, L, L), bool)  # bidirectional (MLM)
    assert not bool(segments_from_mask(full)[1])


# ----------------------------------------------------------------------------- splash (Pallas interpret mode)


def marked_reference(*args):
    """The reference plus 1000: an output equal to the plain reference came from the kernel."""
    return einsum_attention(*args) + 1000.0


@pytest.fixture(scope="module")
def splash_fn():
    return jax.jit(lambda q, k, v, m: fused_attention("splash_interpret", q, k, v, m, F32, marked_reference))


@pytest.mark.parametrize("g", [4, 2], ids=["mha", "gqa"])
@pytest.mark.parametrize("kind", ["causal", "packed", "prefix"])
def test_splash_interpret_matches_einsum(splash_fn, kind, g):
    q, k, v = qkv(g)
    mask = mask_of(kind)
    want = einsum_attention(q, k, v, mask, F32) + (1000.0 if kind == "prefix" else 0.0)  # prefix: not causal
    assert max_diff(splash_fn(q, k, v, mask), want) <= 2e-5 * (100 if kind == "prefix" else 1)


def test_splash_interpret_gradients_match_einsum():
    q, k, v = qkv(2, seed=3)
    mask = mask_of("packed")

    def loss(fn):
        return lambda q, k, v: jnp.sum(jnp.sin(fn(q, k, v, mask, F32)))

    splash = lambda q, k, v, m, d: fused_attention("splash_interpret", q, k, v, m, d, dot_product_attention)
    got = jax.jit(jax.grad(loss(splash), argnums=(0, 1, 2)))(q, k, v)
    want = jax.grad(loss(einsum_attention), argnums=(0, 1, 2))(q, k, v)
    for a, b in zip(got, want, strict=True):
        assert max_diff(a, b) <= 1e-4


def test_splash_takes_the_reference_for_lengths_it_cannot_tile():
    calls = []
    q, k, v = qkv(2, length=40)

    def reference(*args):
        calls.append(1)
        return einsum_attention(*args)

    out = fused_attention("splash_interpret", q, k, v, mask_of("causal", 40), F32, reference)
    assert calls and max_diff(out, einsum_attention(q, k, v, mask_of("causal", 40), F32)) == 0.0
    with pytest.raises(ValueError, match="divisible by 128"):
        attention_kernels.splash_attention(q, k, v, jnp.ones((B, 40), jnp.int32), F32)


def test_model_with_splash_interpret_matches_einsum():
    from gpt_jax.config import ModelConfig
    from gpt_jax.model import GPT, init_params

    cfg = ModelConfig(vocab_size=64, block_size=L, n_layer=1, n_head=4, n_kv_head=2, n_embd=32, pos="rope")
    params = init_params(cfg, jax.random.PRNGKey(0))
    ids = jax.random.randint(jax.random.PRNGKey(1), (1, L), 0, 64)
    ref = GPT(cfg).apply({"params": params}, ids)
    got = jax.jit(lambda p, i: GPT(cfg.replace(attention="splash_interpret")).apply({"params": p}, i))(params, ids)
    assert max_diff(got, ref) <= 1e-4 * float(jnp.max(jnp.abs(ref)))


# ----------------------------------------------------------------------------- cuDNN path, its calls run by XLA


@pytest.mark.parametrize("kind", ["causal", "packed"])
def test_cudnn_path_with_xla_matches_einsum(kind):
    q, k, v = qkv(2, seed=5)
    mask = mask_of(kind)
    seg, exact = segments_from_mask(mask)
    plain = exact & jnp.all(seg == 1)
    assert bool(plain) == (kind == "causal")
    got = attention_kernels.cudnn_attention(q, k, v, mask, plain, F32, implementation="xla")
    assert max_diff(got, einsum_attention(q, k, v, mask, F32)) <= 2e-5


@pytest.fixture
def fake_gpu(monkeypatch):
    """jax.default_backend() says 'gpu' to the dispatch, and every dot_product_attention call is recorded
    and run with implementation='xla' (cuDNN cannot run here)."""
    calls = []
    real = jax.nn.dot_product_attention

    def recording(q, k, v, *args, implementation=None, **kwargs):
        calls.append({"dtype": q.dtype, "implementation": implementation, **kwargs})
        return real(q, k, v, *args, implementation="xla", **kwargs)

    monkeypatch.setattr(jax.nn, "dot_product_attention", recording)
    monkeypatch.setattr(attention.jax, "default_backend", lambda: "gpu")
    return calls


def test_gpu_path_builds_causal_cudnn_calls_in_bf16(fake_gpu):
    from gpt_jax.config import ModelConfig
    from gpt_jax.model import GPT, init_params

    cfg = ModelConfig(vocab_size=64, block_size=32, n_layer=1, n_head=4, n_embd=32, dtype="bfloat16")
    assert resolve_attention("auto", cfg.compute_dtype) == "cudnn"  # auto on a GPU in bf16
    params = init_params(cfg.replace(attention="einsum"), jax.random.PRNGKey(0))
    ids = jax.random.randint(jax.random.PRNGKey(1), (B, 32), 0, 64)
    ref = GPT(cfg.replace(attention="einsum")).apply({"params": params}, ids)
    got = GPT(cfg.replace(attention="cudnn")).apply({"params": params}, ids)
    # traced once per lax.cond branch: the causal one without a mask, the packed one with it
    assert [c["is_causal"] for c in fake_gpu if "is_causal" in c] == [True]
    assert "mask" not in fake_gpu[0] and fake_gpu[1]["mask"].shape == (B, 1, 32, 32)
    assert all(c["implementation"] == "cudnn" and c["dtype"] == jnp.bfloat16 for c in fake_gpu)
    assert max_diff(got, ref) <= 2e-2 * float(jnp.max(jnp.abs(ref)))


# ----------------------------------------------------------------------------- selection errors


def test_kernels_refuse_the_wrong_backend_in_one_line():
    check = attention_kernels.check_kernel
    with pytest.raises(ValueError, match="needs a TPU but JAX runs on cpu.*splash_interpret") as e:
        check("splash", "cpu", "float32")
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="needs a GPU but JAX runs on tpu.*model.attention=auto"):
        check("cudnn", "tpu", "bfloat16")
    with pytest.raises(ValueError, match="needs bfloat16.*model.dtype=bfloat16"):
        check("cudnn", "gpu", "float32")
    for ok in [("splash", "tpu", "float32"), ("cudnn", "gpu", "bfloat16"), ("splash_interpret", "cpu", "float32")]:
        check(*ok)
    check("auto", "cpu", "float32")


def test_a_kernel_the_backend_lacks_takes_autos_path_with_a_warning():
    assert jax.default_backend() == "cpu"
    with pytest.warns(UserWarning, match="needs a TPU.*using model.attention=auto"):
        assert resolve_attention("splash") == "einsum"  # e.g. sampling on CPU a run trained on a TPU
    with pytest.warns(UserWarning, match="needs a GPU"):
        assert resolve_attention("cudnn", jnp.bfloat16) == "einsum"
    assert resolve_attention("splash_interpret") == "splash_interpret"


def test_trainer_refuses_a_kernel_the_backend_lacks_before_writing(tiny_config, tmp_path):
    from gpt_jax.trainer import train_and_evaluate

    config = tiny_config()
    config.model.attention = "cudnn"
    with pytest.raises(ValueError, match="model.attention='cudnn' needs a GPU"):
        train_and_evaluate(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_unknown_attention_names_the_choices():
    from gpt_jax.config import ModelConfig

    with pytest.raises(ValueError, match="cudnn.*splash"):
        ModelConfig(attention="flash")


# ----------------------------------------------------------------------------- on accelerators


@pytest.mark.accelerator
@pytest.mark.parametrize("kind", ["causal", "packed"])
def test_real_kernel_matches_einsum_on_accelerator(kind):
    backend = jax.default_backend()
    if backend not in ("gpu", "tpu"):
        pytest.skip("needs a GPU (cuDNN) or TPU (splash); run benchmarks/device_check.sh there")
    name = "cudnn" if backend == "gpu" else "splash"
    q, k, v = (t.astype(jnp.bfloat16) for t in qkv(2, seed=7))
    mask = mask_of(kind)
    fn = jax.jit(lambda q, k, v, m: fused_attention(name, q, k, v, m, jnp.bfloat16, dot_product_attention))
    want = einsum_attention(q.astype(F32), k.astype(F32), v.astype(F32), mask, F32)
    assert max_diff(fn(q, k, v, mask), want) <= 2e-2 * float(jnp.max(jnp.abs(want)))


# ----------------------------------------------------------------------------- benchmarks/device_check.sh
# Its full --tiny run (benchmarks.run --quick + these accelerator tests, ~25 s of CPU) is recorded in
# experiments/results/kp.md; here only what it refuses, which costs one `import jax`.


def _device_check(*args):
    import pathlib
    import subprocess
    import sys

    script = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "device_check.sh"
    env = {**__import__("os").environ, "PYTHON": sys.executable, "JAX_PLATFORMS": "cpu"}
    return subprocess.run([str(script), *args], capture_output=True, text=True, env=env, timeout=120)


def test_device_check_refuses_a_cpu_only_jax_and_bad_flags():
    got = _device_check()
    assert got.returncode == 2 and "JAX sees no GPU or TPU (backend cpu)" in got.stderr and "--tiny" in got.stderr
    assert len(got.stderr.strip().splitlines()) == 1
    got = _device_check("--full")
    assert got.returncode == 2 and got.stderr.startswith("usage:")
