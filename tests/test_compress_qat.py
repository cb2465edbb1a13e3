"""Quantization-aware training: fake quant equals quantize-dequantize, its gradient passes straight
through, and the QAT task's loss sees fake-quantized weights."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpt_jax.compression import qtensor
from gpt_jax.compression.matrices import flat
from gpt_jax.compression.qat import check, fake_quant, fake_quant_params
from gpt_jax.config import ModelConfig
from gpt_jax.model import init_params


@pytest.mark.parametrize("bits,group", [(8, 64), (4, 64), (4, 32)])
def test_fake_quant_forward_is_quantize_dequantize(bits, group):
    w = np.random.default_rng(0).standard_normal((128, 24)).astype(np.float32)
    got = np.asarray(fake_quant(jnp.asarray(w), bits, group))
    # numpy reference with float32 scales (the stored format rounds scales to float16: within a step)
    w_g = w.reshape(128 // group, group, 24)
    scale = np.abs(w_g).max(1, keepdims=True) / qtensor.qmax(bits)
    ref = (np.clip(np.rint(w_g / scale), -qtensor.qmax(bits), qtensor.qmax(bits)) * scale).reshape(128, 24)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-7)
    assert len(np.unique(got[:group, 0])) <= 2 * qtensor.qmax(bits) + 1
    # the PTQ grid (float16 scales, rounded up): a value may land one step away, never more
    q, s = qtensor.quantize_groups(w, bits, group)
    assert np.abs(got - qtensor.dequantize_groups(q, s)).max() <= 1.1 * float(s.astype(np.float32).max())


def test_gradient_passes_straight_through():
    w = jnp.asarray(np.random.default_rng(1).standard_normal((64, 8)).astype(np.float32))
    c = jnp.asarray(np.random.default_rng(2).standard_normal((64, 8)).astype(np.float32))
    g = jax.grad(lambda w: jnp.sum(fake_quant(w, 4, 32) * c))(w)
    np.testing.assert_array_equal(g, c)  # identity, although round() has zero gradient


def test_fake_quant_params_touch_the_matrices_only_and_check_refuses_bad_groups():
    cfg = ModelConfig(n_layer=1, n_head=2, n_embd=32, block_size=16, vocab_size=65)
    params = jax.device_get(nn.meta.unbox(init_params(cfg, jax.random.key(0))))
    fq = flat(jax.device_get(fake_quant_params(params, 4, 32)))
    for path, v in flat(params).items():
        changed = not np.array_equal(fq[path], v)
        assert changed == (path[-1] in ("kernel", "out_kernel", "wte", "wpe")), path
    with pytest.raises(ValueError, match="--group_size=48 does not divide"):
        check(params, 4, 48)
