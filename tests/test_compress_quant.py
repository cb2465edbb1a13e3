"""Weight-only quantization: error bounds, int4 packing, int8 logits, GPTQ, the in-memory int8 tensor."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpt_jax.compression import qtensor
from gpt_jax.compression.gptq import gptq_quantize
from gpt_jax.compression.quantize import QuantSpec, check, dequantize_tree, quantize_params, restore
from gpt_jax.config import ModelConfig
from gpt_jax.model import GPT, init_params

CFG = ModelConfig(n_layer=2, n_head=2, n_embd=64, block_size=16, vocab_size=65)


def float_params():
    return jax.device_get(nn.meta.unbox(init_params(CFG, jax.random.key(0))))


@pytest.mark.parametrize("bits,group", [(8, 0), (8, 32), (4, 32), (4, 64), (4, 128)])
def test_dequantize_error_within_half_a_step_per_group(bits, group):
    w = np.random.default_rng(0).standard_normal((256, 48)).astype(np.float32) * np.linspace(0.1, 3, 48)
    g = qtensor.check_grouping(bits, group, 256, "w")
    q, scale = qtensor.quantize_groups(w, bits, g)
    assert q.dtype == np.int8 and np.abs(q).max() <= qtensor.qmax(bits)
    err = np.abs(qtensor.dequantize_groups(q, scale) - w).reshape(256 // g, g, 48)
    bound = scale[:, None, :] / 2 * (1 + 1e-6)  # round to nearest: at most half a grid step
    assert (err <= bound).all()
    exact = np.abs(w.reshape(256 // g, g, 48)).max(1) / qtensor.qmax(bits)
    assert scale.dtype == np.float16 and (scale >= exact).all() and np.allclose(scale, exact, rtol=2e-3)


def test_int4_pack_round_trip_is_exact():
    q = np.random.default_rng(1).integers(-8, 8, (64, 33)).astype(np.int8)
    packed = qtensor.pack_int4(q)
    assert packed.dtype == np.uint8 and packed.shape == (32, 33)
    np.testing.assert_array_equal(qtensor.unpack_int4(packed), q)
    np.testing.assert_array_equal(np.asarray(qtensor.unpack_int4(jnp.asarray(packed), xp=jnp)), q)
    with pytest.raises(ValueError, match="even"):
        qtensor.pack_int4(q[:3])


def test_int8_logits_close_to_float32_and_weights_stay_int8():
    params = float_params()
    stored, records = quantize_params(params, QuantSpec(8))
    qparams = restore(stored, records, 8)
    fc = qparams["h_0"]["mlp"]["fc"]["kernel"]
    assert isinstance(fc, qtensor.QuantizedTensor) and fc.q.dtype == jnp.int8
    ids = jax.random.randint(jax.random.key(1), (2, 16), 0, CFG.vocab_size)
    ref = GPT(CFG).apply({"params": params}, ids)
    got = jax.jit(lambda p: GPT(CFG).apply({"params": p}, ids))(qparams)
    # stated tolerance: per-channel int8 moves the logits by < 8% of their spread at worst, < 2% on average
    spread = float(ref.std())
    assert float(jnp.abs(got - ref).max()) < 0.08 * spread
    assert float(jnp.abs(got - ref).mean()) < 0.02 * spread
    # the decode path (batch 1, one token: kernel.reshape(D, -1)) runs on the int8 tensors too
    from gpt_jax.generation.engine import generate  # lazy: the test's second half only
    from gpt_jax.generation.options import GenerateOptions  # lazy: the test's second half only

    o = GenerateOptions(max_new_tokens=6, temperature=0)
    same_weights = dequantize_tree(qparams)  # int8 in the matmul == its dequantized float weights
    np.testing.assert_array_equal(generate(CFG, qparams, [[1, 2, 3]], o), generate(CFG, same_weights, [[1, 2, 3]], o))


def test_int4_stored_packed_and_dequantized_on_restore():
    params = float_params()
    stored, records = quantize_params(params, QuantSpec(4, 32))
    q = stored["h_0"]["mlp"]["fc"]["kernel"]
    assert q["q"].dtype == np.uint8 and q["q"].shape == (32, 256) and q["scale"].shape == (2, 256)
    assert stored["wte"]["q"].shape == (32, 65)  # the tied embedding in its head view [D, V]
    back = restore(stored, records, 4)
    for path in (("h_1", "attn", "out_kernel"), ("wte",)):
        w, got = params, back
        for k in path:
            w, got = w[k], got[k]
        assert got.shape == w.shape and np.abs(np.asarray(got) - w).max() < np.abs(w).max() / 7
    np.testing.assert_array_equal(back["ln_f"]["scale"], params["ln_f"]["scale"])  # norms: float, untouched


def test_gptq_beats_absmax_on_the_calibrated_inputs():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2048, 64)) @ rng.standard_normal((64, 64))  # correlated inputs
    x[:, :4] *= 10  # a few large-activation features, as in LMs
    w = rng.standard_normal((64, 32)).astype(np.float32)
    q_a, s_a = qtensor.quantize_groups(w, 4, 32)
    q_g, s_g = gptq_quantize(w, x.T @ x, 4, 32)
    err = lambda q, s: np.linalg.norm(x @ (qtensor.dequantize_groups(q, s) - w))
    assert np.abs(q_g).max() <= 7
    assert err(q_g, s_g) < 0.8 * err(q_a, s_a)


def test_dequantize_tree_gives_plain_float_params():
    stored, records = quantize_params(float_params(), QuantSpec(8))
    plain = dequantize_tree(restore(stored, records, 8))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(plain))


@pytest.mark.parametrize(
    "spec,match",
    [
        (dict(bits=3), "--bits=3 is not supported"),
        (dict(bits=4, method="awq"), "AWQ is not implemented"),
        (dict(bits=8, group_size=-1), "must be >= 0"),
    ],
)
def test_bad_specs_are_one_line_errors(spec, match):
    with pytest.raises(ValueError, match=match) as e:
        QuantSpec(**spec)
    assert "\n" not in str(e.value)


def test_group_size_must_divide_every_matrix():
    with pytest.raises(ValueError, match="--group_size=48 does not divide the 64 input features"):
        check(float_params(), QuantSpec(4, 48))
