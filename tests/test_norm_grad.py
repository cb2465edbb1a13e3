"""model.norm_grad="custom" (the default): gpt_jax.layers.residual_norm's hand-written backward equals autodiff of the
plain Norm (up to float rounding), leaves the forward bit-identical, and keeps XLA:CPU from recomputing
the residual stream's gradient inside every consumer fusion (issue 21)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpt_jax.config import ModelConfig
from gpt_jax.layers import Norm, _norm_stats, residual_norm
from gpt_jax.model import GPT
from tests.test_model import TINY, flat, lm_loss_and_grad, make_params, random_ids

KINDS = {  # (rms, bias)
    "layernorm": (False, True),
    "layernorm_no_bias": (False, False),
    "rmsnorm": (True, False),
}


def plain(x, scale, bias, eps, rms):
    """What autodiff differentiates when norm_grad="autodiff": (x, norm(x) * scale + bias)."""
    y = _norm_stats(x, eps, rms)[0] * scale
    return x, (y if bias is None else y + bias)


def random_inputs(seed, has_bias, shape=(3, 5, 32)):
    r = np.random.default_rng(seed)
    d = shape[-1]
    x = jnp.asarray(r.standard_normal(shape) * 2.0 + 0.5, jnp.float32)  # a non-zero mean per row
    scale = jnp.asarray(1.0 + 0.3 * r.standard_normal(d), jnp.float32)
    bias = jnp.asarray(0.1 * r.standard_normal(d), jnp.float32) if has_bias else None
    cts = (jnp.asarray(r.standard_normal(shape), jnp.float32), jnp.asarray(r.standard_normal(shape), jnp.float32))
    return x, scale, bias, cts


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_residual_norm_vjp_equals_autodiff(kind, seed):
    rms, has_bias = KINDS[kind]
    x, scale, bias, cts = random_inputs(seed, has_bias)
    out_c, vjp_c = jax.vjp(lambda *a: residual_norm(*a, 1e-5, rms), x, scale, bias)
    out_p, vjp_p = jax.vjp(lambda *a: plain(*a, 1e-5, rms), x, scale, bias)
    for a, b in zip(jax.tree.leaves(out_c), jax.tree.leaves(out_p), strict=True):
        np.testing.assert_array_equal(a, b)  # the forward is the same ops
    grads_c, grads_p = vjp_c(cts), vjp_p(cts)
    assert (grads_c[2] is None) == (not has_bias)
    for a, b in zip(jax.tree.leaves(grads_c), jax.tree.leaves(grads_p), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


def test_residual_norm_vjp_under_jit_and_without_pass_cotangent():
    """ln_f uses only the normed output: a zero cotangent for the passed-through x."""
    x, scale, bias, (_, g_y) = random_inputs(3, True)

    def loss(fn):
        return lambda x, s, b: jnp.sum(jnp.tanh(fn(x, s, b, 1e-5, False)[1]) * g_y)

    gc = jax.jit(jax.grad(loss(residual_norm), argnums=(0, 1, 2)))(x, scale, bias)
    gp = jax.jit(jax.grad(loss(plain), argnums=(0, 1, 2)))(x, scale, bias)
    for a, b in zip(gc, gp, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
def test_norm_module_forward_bit_identical(norm):
    base = TINY.replace(norm=norm)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 4, TINY.n_embd)), jnp.float32)
    params = Norm(base).init(jax.random.key(0), x)
    outs = {}
    for mode in ("autodiff", "custom"):
        m = Norm(base.replace(norm_grad=mode))
        outs[mode] = (m.apply(params, x), m.apply(params, x, residual=True))
    np.testing.assert_array_equal(outs["custom"][0], outs["autodiff"][0])
    for a, b in zip(outs["custom"][1], outs["autodiff"][1], strict=True):
        np.testing.assert_array_equal(a, b)


GPT_VARIANTS = {
    "default": {},
    "rmsnorm": {"norm": "rmsnorm"},
    "no_bias": {"bias": False},
    "scan_remat_dots": {"scan_layers": True, "remat": "dots"},
    "bf16": {"dtype": "bfloat16"},
}


@pytest.mark.parametrize("name", list(GPT_VARIANTS))
def test_gpt_loss_and_grads_equal_autodiff(name):
    base = TINY.replace(n_layer=3, norm_grad="autodiff", **GPT_VARIANTS[name])
    params = make_params(base)
    ids, targets = random_ids(4), random_ids(5)

    custom = base.replace(norm_grad="custom")
    (l0, g0), (l1, g1) = lm_loss_and_grad(base, params, ids, targets), lm_loss_and_grad(custom, params, ids, targets)
    np.testing.assert_array_equal(l1, l0)  # same forward
    g0, g1 = flat(g0), flat(g1)
    assert g0.keys() == g1.keys()
    for k in g0:
        np.testing.assert_allclose(g1[k], g0[k], atol=1e-5, rtol=1e-5, err_msg=k)


def test_custom_is_the_default():
    assert ModelConfig().norm_grad == "custom"


def test_norm_grad_is_validated():
    with pytest.raises(ValueError, match="norm_grad"):
        ModelConfig(norm_grad="fused")


def _largest_fusion(cfg: ModelConfig) -> int:
    """Instructions in the largest fused computation of the compiled train gradient."""
    from benchmarks.profile_step import parse_hlo

    params = make_params(cfg)
    ids = random_ids(4, shape=(4, cfg.block_size))

    def loss(p):
        return jnp.mean(jnp.square(GPT(cfg).apply({"params": p}, ids)))

    _, comps = parse_hlo(jax.jit(jax.grad(loss)).lower(params).compile().as_text())
    return max(sum(c.values()) for name, c in comps.items() if "fus" in name)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="an XLA:CPU fusion property")
def test_custom_norm_grad_stops_fusion_duplication_on_cpu():
    """With autodiff, XLA:CPU fuses the residual stream's backward through every later layer into each
    consumer (fusions grow with depth); the custom VJP materialises it once per norm."""
    deep = TINY.replace(n_layer=6, norm_grad="autodiff")
    plain_size = _largest_fusion(deep)
    custom_size = _largest_fusion(deep.replace(norm_grad="custom"))
    assert custom_size < 0.5 * plain_size, (custom_size, plain_size)
