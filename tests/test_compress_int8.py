"""The in-memory int8 weight (gpt_jax.compression.qtensor.QuantizedTensor): every matmul form the GPT
uses equals the float matmul of its dequantized weight, W8A8 stays close, and the decode loop reads the
int8 bytes inside its `while` (XLA must not hoist a float copy out of the loop)."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpt_jax.compression import qtensor
from gpt_jax.compression.quantize import QuantSpec, quantize_params, restore
from gpt_jax.config import ModelConfig
from gpt_jax.model import init_params

RNG = np.random.default_rng(0)


def qt(shape, n_in, transposed=False, act_bits=0):
    w = RNG.standard_normal(shape).astype(np.float32)
    w_IxO = w.T if transposed else w.reshape(int(np.prod(shape[:n_in])), -1)
    q, scale = qtensor.quantize_groups(w_IxO, 8, w_IxO.shape[0])
    return qtensor.int8_tensor(q, scale, shape, n_in, transposed, act_bits)


@pytest.mark.parametrize(
    "eqn,shape,n_in,transposed,x_shape",
    [
        ("...z,za->...a", (32, 48), 1, False, (2, 3, 32)),  # Dense (MLP)
        ("bld,dhk->bhlk", (32, 4, 8), 1, False, (2, 5, 32)),  # q/k/v projection (prefill)
        ("bhlk,hkd->bld", (4, 8, 32), 2, False, (2, 4, 5, 8)),  # attention out
        ("bld,vd->blv", (65, 32), 1, True, (2, 5, 32)),  # tied head (wte)
        ("...z,za->...a", (32, 48), 1, False, (1, 32)),  # one row: the fused int8 path
        ("bhlk,hkd->bld", (4, 8, 32), 2, False, (1, 4, 1, 8)),  # one row, two contracted axes
    ],
)
def test_int8_einsum_equals_the_float_einsum_of_its_weight(eqn, shape, n_in, transposed, x_shape):
    w = qt(shape, n_in, transposed)
    x = jnp.asarray(RNG.standard_normal(x_shape).astype(np.float32))
    got = jax.jit(lambda w, x: w.einsum(eqn, x))(w, x)
    ref = jnp.einsum(eqn, x, w.astype(jnp.float32))
    assert w.shape == shape and w.q.dtype == jnp.int8
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_decode_view_rows_and_w8a8():
    w = qt((32, 4, 8), 1)
    x = jnp.asarray(RNG.standard_normal((1, 32)).astype(np.float32))
    view = w.reshape(32, -1)  # HeadsProjection's decode path
    assert view.split_rows and not qt((32, 48), 1).split_rows
    np.testing.assert_allclose(
        view.einsum("bd,dn->bn", x), x @ w.astype(jnp.float32).reshape(32, -1), rtol=1e-5, atol=1e-5
    )
    with pytest.raises(ValueError, match="cannot be viewed"):
        w.reshape(16, 64)
    table = qt((65, 32), 1, transposed=True)
    ids = jnp.array([[0, 7, 64]])
    np.testing.assert_allclose(table.take_rows(ids), jnp.take(table.astype(jnp.float32), ids, axis=0), rtol=1e-6)
    # W8A8: activations rounded per row to 127 levels too; stated tolerance 2% of the output spread
    a8 = qt((32, 48), 1, act_bits=8)
    xs = jnp.asarray(RNG.standard_normal((3, 32)).astype(np.float32))
    ref = xs @ a8.astype(jnp.float32)
    got = a8.einsum("...z,za->...a", xs)
    assert 0 < float(jnp.abs(got - ref).max()) < 0.02 * float(ref.std())


def decode_hlo_and_loop_body():
    """The compiled greedy decode program of a 1-layer int8 model (n_embd 32, 2 heads of 16), and its
    `while` body (the longest one)."""
    from gpt_jax.generation import decode as dec  # lazy: only these tests
    from gpt_jax.generation.options import GenerateOptions  # lazy: only these tests
    from gpt_jax.generation.processors import knobs_of, mode_of  # lazy: only these tests
    from gpt_jax.generation.prompts import pack  # lazy: only these tests

    cfg = ModelConfig(n_layer=1, n_head=2, n_embd=32, block_size=32, vocab_size=65)
    params = jax.device_get(nn.meta.unbox(init_params(cfg, jax.random.key(0))))
    stored, records = quantize_params(params, QuantSpec(8))
    qparams = restore(stored, records, 8)
    o = GenerateOptions(max_new_tokens=4, temperature=0)
    prompt, start = pack(cfg, [np.array([1, 2, 3])], 4)
    mode, knobs = mode_of(o, 65), knobs_of(o, 65)
    fn = lambda p: dec.generate_jit(cfg, mode, prompt.shape[1] + 4, 4, p, prompt, start, knobs, jax.random.key(0))
    hlo = jax.jit(fn).lower(qparams).compile().as_text()
    bodies = re.findall(r"body=(%[\w.\-]+)", hlo)
    assert bodies
    return hlo, max((hlo[hlo.index("\n" + b + " ") :].split("\n}\n")[0] for b in bodies), key=len)


def test_decode_loop_reads_int8_inside_the_while_body():
    hlo, body = decode_hlo_and_loop_body()
    # every kernel and the tied head: a fused dot over s8 inside the loop, and no s8 -> f32 copy outside it
    assert len(re.findall(r"s8\[[\d,]+\][^\n]*\n[^\n]*convert", body)) + body.count("s8[") >= 5
    entry = hlo[hlo.index("\nENTRY") :]
    while_line = next(line for line in entry.split("\n") if " while(" in line)
    hoisted = [line for line in entry.split("\n") if re.search(r"= f32\[\d+,\d+\]\S* fusion\(%\S*kernel\S*___q", line)]
    assert not any(h.split("=")[0].strip() in while_line for h in hoisted)


def test_decode_loop_reads_qkv_int8_as_contiguous_rows():
    """The q/k/v kernels are s8[D, H, K]: read through a bitcast to [H*K, D] inside the fused dot, the
    contracted axis is split (i -> i // K, i % K) and XLA's CPU loop loads bytes one by one (~9x slower,
    experiments/results/compression.md). Every 3-D s8 operand of a fused dot must keep its last axis
    whole in the 2-D view (attn out [H, K, D] does); q/k/v arrive as 2-D copies made before the loop."""
    hlo, body = decode_hlo_and_loop_body()
    dots = [c for c in hlo.split("\n}\n") if " dot(" in c and "s8[" in c]
    assert dots
    for comp in dots:
        for name, last in re.findall(r"%(\S+) = s8\[\d+,\d+,(\d+)\]\{2,1,0\} parameter", comp):
            views = re.findall(r"= s8\[\d+,(\d+)\]\{1,0\} bitcast\(%" + re.escape(name) + r"\)", comp)
            assert all(v == last for v in views), (name, last, views)
    entry = hlo[hlo.index("\nENTRY") :]
    for proj in ("query", "key", "value"):
        copy = re.search(r"= s8\[32,32\]\S* fusion\(%\S*" + proj + r"\S*kernel\S*___q", entry)
        assert copy, proj  # made once, in the entry computation
        assert copy.group(0).split("fusion(")[1] not in body
