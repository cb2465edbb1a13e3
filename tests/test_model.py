"""Model tests: shapes/dtypes for every architecture switch, causality, attention paths, scan vs
unrolled, remat, GPT-2 parameter counts, GPT-2 init statistics, config validation.

Tiny shapes throughout; every (config -> init, apply) pair is compiled once per module.
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from gpt_jax.config import PRESETS, ModelConfig, model_config_from
from gpt_jax.model import GPT, count_params, init_params

TINY = ModelConfig(vocab_size=64, block_size=16, n_layer=2, n_head=4, n_embd=32)
B, L = 2, TINY.block_size

VARIANTS = {
    "default": {},
    "sinusoidal": {"pos": "sinusoidal"},
    "rope": {"pos": "rope"},
    "rmsnorm": {"norm": "rmsnorm"},
    "swiglu": {"mlp": "swiglu"},
    "gqa": {"n_kv_head": 2},
    "no_bias": {"bias": False},
    "untied": {"tie_embeddings": False},
    "bf16": {"dtype": "bfloat16"},
    "scan": {"scan_layers": True},
    "remat_full": {"remat": "full"},
    "remat_dots": {"remat": "dots"},
    "scan_remat_dots": {"scan_layers": True, "remat": "dots"},
}


def cfg_of(name: str, **extra) -> ModelConfig:
    return TINY.replace(**VARIANTS[name], **extra)


def abstract_params(cfg: ModelConfig):
    """Boxed ShapeDtypeStructs: tracing only, no compile."""
    return jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))


def make_params(cfg: ModelConfig, seed: int = 0):
    """Random params of the right shapes, built in numpy.

    Compiling `init_params` (threefry for every kernel) costs seconds per config on this CPU, and
    these tests only need *some* params; biases and norm scales get non-trivial values too so
    their code paths matter. The real initialiser is tested once below.
    """
    r = np.random.default_rng(seed)
    shapes = flat(nn.meta.unbox(abstract_params(cfg)))
    out = {}
    for name, s in shapes.items():
        x = r.standard_normal(s.shape).astype(np.float32)
        leaf = name.rsplit("/", 1)[-1]
        out[name] = 1.0 + 0.1 * x if leaf == "scale" else (0.02 if "bias" in leaf else 0.2) * x
    return traverse_util.unflatten_dict({tuple(k.split("/")): jnp.asarray(v) for k, v in out.items()})


@functools.cache
def real_init(cfg: ModelConfig, seed: int = 0):
    return nn.meta.unbox(init_params(cfg, jax.random.key(seed)))  # eager: op compiles are shared


@functools.cache
def _apply_fn(cfg: ModelConfig):
    return jax.jit(lambda params, ids: GPT(cfg).apply({"params": params}, ids))


def apply(cfg: ModelConfig, params, ids):
    return _apply_fn(cfg)(params, ids)


def flat(params) -> dict:
    return {"/".join(k): v for k, v in traverse_util.flatten_dict(params).items()}


def random_ids(seed: int = 0, shape=(B, L), vocab: int = TINY.vocab_size) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).integers(0, vocab, shape), jnp.int32)


def unrolled_to_scanned(params, n_layer: int):
    """h_0..h_{n-1} -> h/block with a leading layer axis (the layout nn.scan creates)."""
    out = {k: v for k, v in params.items() if not k.startswith("h_")}
    layers = [params[f"h_{i}"] for i in range(n_layer)]
    out["h"] = {"block": jax.tree.map(lambda *xs: jnp.stack(xs), *layers)}
    return out


# ----------------------------------------------------------------------------- shapes / dtypes

# Every forward uses this batch: row 0 is the base sequence, row i > 0 differs from it only at
# CHANGED_AT[i] -- so one compiled apply per config checks shapes and causality together.
CHANGED_AT = (None, 0, 5, L - 1)


def causal_batch(seed: int = 1, vocab: int = TINY.vocab_size) -> jax.Array:
    base = np.random.default_rng(seed).integers(0, vocab, (L,))
    rows = [base.copy() for _ in CHANGED_AT]
    for row, t in zip(rows, CHANGED_AT):
        if t is not None:
            row[t] = (row[t] + 1) % vocab
    return jnp.asarray(np.stack(rows), jnp.int32)


@functools.cache
def forward(name: str, **extra):
    cfg = cfg_of(name, **extra)
    params = make_params(cfg)
    return cfg, params, np.asarray(apply(cfg, params, causal_batch()))


def assert_causal(logits) -> None:
    base = logits[0]
    for row, t in enumerate(CHANGED_AT):
        if t is None:
            continue
        # positions before the changed token see exactly the same inputs
        np.testing.assert_allclose(logits[row, :t], base[:t], atol=1e-6, rtol=0)
        # ...and the change is visible from t on (so this check can fail)
        assert np.abs(logits[row, t:] - base[t:]).max() > 1e-3, (row, t)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_forward_shape_dtype_every_switch(name):
    cfg, _params, logits = forward(name)
    assert logits.shape == (len(CHANGED_AT), L, cfg.vocab_size)
    assert logits.dtype == np.float32
    assert np.isfinite(logits).all()
    assert logits.std() > 1e-2  # not a constant output
    assert {x.dtype for x in jax.tree.leaves(abstract_params(cfg))} == {jnp.dtype(jnp.float32)}  # param_dtype


@pytest.mark.parametrize("name", list(VARIANTS))
def test_causal_every_switch(name):
    assert_causal(forward(name)[2])


@pytest.mark.parametrize("name", ["default", "rope", "scan"])
def test_causal_exact(name):
    """Learned positions, rope and scanned layers: earlier logits do not move at all."""
    logits = forward(name)[2]
    for row, t in enumerate(CHANGED_AT):
        if t:
            assert np.array_equal(logits[row, :t], logits[0, :t]), (name, t)


def test_prefix_of_a_sequence_gives_the_same_logits():
    cfg, params, logits = forward("default")
    short = apply(cfg, params, causal_batch()[:1, :5])
    assert short.shape == (1, 5, cfg.vocab_size)
    np.testing.assert_allclose(short[0], logits[0, :5], atol=1e-5, rtol=1e-5)


def test_too_long_sequence_is_an_error_for_learned_positions():
    cfg, params, _ = forward("default")
    with pytest.raises(ValueError, match="block_size"):
        GPT(cfg).apply({"params": params}, jnp.zeros((1, L + 1), jnp.int32))


def test_param_structure_follows_switches():
    d, h, k, f, v = TINY.n_embd, TINY.n_head, TINY.head_dim, TINY.ff_dim, TINY.vocab_size

    def shapes(name):
        return {n: x.shape for n, x in flat(nn.meta.unbox(abstract_params(cfg_of(name)))).items()}

    p = shapes("default")
    assert p["wte"] == (v, d) and p["wpe"] == (TINY.block_size, d) and "lm_head" not in p
    assert p["h_0/attn/query/kernel"] == (d, h, k)
    assert p["h_0/attn/key/kernel"] == (d, h, k)
    assert p["h_0/attn/query/bias"] == (h, k)
    assert p["h_0/attn/out_kernel"] == (h, k, d)
    assert p["h_0/mlp/fc/kernel"] == (d, f)
    assert p["h_0/mlp/proj/kernel"] == (f, d)
    assert p["ln_f/bias"] == (d,)
    assert f"h_{TINY.n_layer - 1}/ln_2/scale" in p and f"h_{TINY.n_layer}/ln_2/scale" not in p
    # analytic GPT-2 count: embeddings + per layer (2 LN, q/k/v, out, mlp) + final LN
    per_layer = 2 * 2 * d + 3 * (d * d + d) + (d * d + d) + (d * f + f) + (f * d + d)
    expected = v * d + TINY.block_size * d + TINY.n_layer * per_layer + 2 * d
    assert count_params(abstract_params(TINY)) == expected
    assert count_params(make_params(TINY)) == expected

    for name in ("sinusoidal", "rope"):
        assert "wpe" not in shapes(name)
    gqa = shapes("gqa")
    assert gqa["h_0/attn/query/kernel"] == (d, h, k)
    assert gqa["h_0/attn/key/kernel"] == gqa["h_0/attn/value/kernel"] == (d, 2, k)
    assert gqa["h_0/attn/key/bias"] == (2, k)
    assert not [n for n in shapes("no_bias") if "bias" in n]
    rms = shapes("rmsnorm")
    assert "ln_f/scale" in rms and "ln_f/bias" not in rms
    swi = shapes("swiglu")
    assert swi["h_0/mlp/gate/kernel"] == swi["h_0/mlp/up/kernel"] == (d, f) and "h_0/mlp/fc/kernel" not in swi
    assert shapes("untied")["lm_head"] == (d, v)
    scan = shapes("scan")
    assert scan["h/block/mlp/fc/kernel"] == (TINY.n_layer, d, f)
    assert not [n for n in scan if n.startswith("h_")]
    for name in VARIANTS:
        if name.startswith(("scan", "remat", "bf16")):
            assert count_params(abstract_params(cfg_of(name))) == expected, name


# ----------------------------------------------------------------------------- attention paths


def test_auto_attention_is_einsum_on_cpu():
    from gpt_jax.attention import resolve_attention

    assert jax.default_backend() == "cpu"
    assert resolve_attention("auto") == "einsum"
    assert resolve_attention("dot_product") == "dot_product"


@pytest.mark.parametrize("name", ["default", "gqa", "rope"])
def test_einsum_attention_matches_dot_product_attention(name):
    # 'auto' is the einsum reference on CPU (checked above); reuse its compiled forward
    cfg, params, einsum_logits = forward(name)
    dpa = cfg.replace(attention="dot_product")
    dpa_logits = np.asarray(apply(dpa, params, causal_batch()))
    np.testing.assert_allclose(dpa_logits, einsum_logits, atol=1e-5, rtol=1e-5)
    assert_causal(dpa_logits)


@pytest.mark.parametrize("g", [4, 2, 1])
def test_attention_functions_against_naive_reference(g):
    from gpt_jax.attention import causal_mask, dot_product_attention, einsum_attention

    r = np.random.default_rng(g)
    b, h, l, k = 2, 4, 6, 8
    q = jnp.asarray(r.standard_normal((b, h, l, k)), jnp.float32)
    kk = jnp.asarray(r.standard_normal((b, g, l, k)), jnp.float32)
    v = jnp.asarray(r.standard_normal((b, g, l, k)), jnp.float32)
    mask = np.broadcast_to(np.asarray(causal_mask(l, l)), (b, l, l)).copy()
    mask[1, :, 0] = False  # a padding-style mask on one row: key 0 hidden
    mask[1, 0, 0] = True  # (every query must see something)
    mask = jnp.asarray(mask)
    # naive reference in numpy: repeat kv heads (head i uses kv head i // (h // g)), masked softmax
    kr, vr = np.repeat(np.asarray(kk), h // g, axis=1), np.repeat(np.asarray(v), h // g, axis=1)
    s = np.einsum("bhlk,bhsk->bhls", np.asarray(q), kr) / math.sqrt(k)
    s = np.where(np.asarray(mask)[:, None], s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    ref = np.einsum("bhls,bhsk->bhlk", p / p.sum(-1, keepdims=True), vr)
    ein = jax.jit(einsum_attention, static_argnums=4)(q, kk, v, mask, jnp.float32)
    dpa = jax.jit(dot_product_attention, static_argnums=4)(q, kk, v, mask, jnp.float32)
    assert ein.shape == dpa.shape == (b, h, l, k)
    np.testing.assert_allclose(ein, ref, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(dpa, ref, atol=1e-5, rtol=1e-5)


def test_causal_mask_offsets_queries_to_the_end():
    from gpt_jax.attention import causal_mask

    np.testing.assert_array_equal(causal_mask(3, 3), np.tril(np.ones((3, 3), bool)))
    # 2 new queries over 4 keys: they are positions 2 and 3
    np.testing.assert_array_equal(causal_mask(2, 4), [[1, 1, 1, 0], [1, 1, 1, 1]])


# ----------------------------------------------------------------------------- scan / remat


def test_scan_layers_equals_unrolled_with_restacked_params():
    unrolled, params, logits = forward("default")
    scanned = cfg_of("scan")
    stacked = unrolled_to_scanned(params, unrolled.n_layer)
    # the same tree (names, shapes) as the scanned model's own init
    ref = jax.tree.map(lambda x: (x.shape, x.dtype), nn.meta.unbox(abstract_params(scanned)))
    assert jax.tree.map(lambda x: (x.shape, x.dtype), stacked) == ref
    assert count_params(stacked) == count_params(params)
    np.testing.assert_allclose(apply(scanned, stacked, causal_batch()), logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["remat_full", "remat_dots", "scan_remat_dots"])
def test_remat_forward_unchanged(name):
    cfg, _, _ = forward(name)
    plain = cfg.replace(remat="none")
    params = make_params(plain)
    np.testing.assert_allclose(
        apply(cfg, params, causal_batch()), apply(plain, params, causal_batch()), atol=1e-6, rtol=1e-6
    )


def lm_loss_and_grad(cfg, params, ids, targets):
    """(next-token cross entropy, its gradient) of GPT(cfg) on (ids, targets), jitted."""

    def loss(p):
        logits = GPT(cfg).apply({"params": p}, ids)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], -1))

    return jax.jit(jax.value_and_grad(loss))(params)


@pytest.mark.parametrize("remat,scan", [("full", False), ("dots", True)])
def test_remat_same_grads(remat, scan):
    plain = TINY.replace(scan_layers=scan)
    rem = plain.replace(remat=remat)
    params = make_params(plain)
    ids, targets = random_ids(4), random_ids(5)

    (l0, g0), (l1, g1) = lm_loss_and_grad(plain, params, ids, targets), lm_loss_and_grad(rem, params, ids, targets)
    np.testing.assert_allclose(l1, l0, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g0)):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5)


def test_bf16_close_to_f32():
    _, params, f32 = forward("default")
    _, params16, bf16 = forward("bf16")
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params16)))
    assert np.abs(bf16 - f32).max() < 0.1 * np.abs(f32).max()
    assert not np.array_equal(bf16, f32)  # really computed in bf16


# ----------------------------------------------------------------------------- GPT-2 sizes

GPT2_COUNTS = {  # HF transformers' counts (tied embeddings, 1024 positions, vocab 50257)
    "gpt2": 124_439_808,
    "gpt2-medium": 354_823_168,
    "gpt2-large": 774_030_080,
    "gpt2-xl": 1_557_611_200,
}


@pytest.mark.parametrize("preset", list(GPT2_COUNTS))
def test_gpt2_preset_param_counts(preset):
    cfg = model_config_from({"preset": preset})
    assert (cfg.vocab_size, cfg.block_size, cfg.tie_embeddings) == (50257, 1024, True)
    abstract = abstract_params(cfg)  # jax.eval_shape: nothing allocated
    leaves = jax.tree.leaves(nn.meta.unbox(abstract))
    assert all(isinstance(x, jax.ShapeDtypeStruct) for x in leaves)
    assert sum(math.prod(x.shape) for x in leaves) == GPT2_COUNTS[preset]
    assert count_params(abstract) == GPT2_COUNTS[preset]


def test_gpt2_count_same_when_scanned():
    cfg = model_config_from({"preset": "gpt2", "scan_layers": True})
    assert count_params(abstract_params(cfg)) == GPT2_COUNTS["gpt2"]


def test_count_params_on_abstract_tree_is_not_deprecated():
    """`count_params(jax.eval_shape(...))` is the documented way to count; it must not lean on
    jnp.size(ShapeDtypeStruct), which JAX deprecates ("will be an error")."""
    import warnings

    abstract = abstract_params(TINY)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        assert count_params(abstract) == count_params(make_params(TINY))


def test_presets_and_overrides():
    cfg = model_config_from({"preset": "shakespeare-char", "n_layer": None, "dropout": 0.2}, vocab_size=65)
    assert (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.block_size) == (6, 6, 384, 256)
    assert cfg.vocab_size == 65 and cfg.dropout == 0.2
    assert model_config_from({"preset": "gpt2", "n_layer": 2}).n_layer == 2
    assert set(PRESETS) >= {"gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"}


# ----------------------------------------------------------------------------- init statistics


def test_init_matches_gpt2():
    """N(0, 0.02) kernels/embeddings, N(0, 0.02/sqrt(2 n_layer)) residual projections, zero
    biases, unit norm scales (GPT-2 / nanoGPT)."""
    cfg = TINY.replace(tie_embeddings=False)
    p = flat(real_init(cfg, 1))
    base, resid = 0.02, 0.02 / math.sqrt(2 * cfg.n_layer)
    pooled: dict[float, list[np.ndarray]] = {base: [], resid: []}
    for name, x in p.items():
        x = np.asarray(x)
        leaf = name.rsplit("/", 1)[-1]
        if leaf == "out_kernel" or name.endswith("mlp/proj/kernel"):
            expected = resid
        elif leaf in ("kernel", "wte", "wpe", "lm_head"):
            expected = base
        elif leaf in ("bias", "out_bias"):
            assert (x == 0).all(), name
            continue
        elif leaf == "scale":
            assert (x == 1).all(), name
            continue
        else:
            raise AssertionError(f"unexpected parameter {name}")
        pooled[expected].append(x.ravel())
        # per tensor: std within ~5 sigma of its estimate (n >= 512 here), mean ~0
        assert x.std() == pytest.approx(expected, rel=max(0.03, 5 / math.sqrt(2 * x.size))), name
        assert abs(x.mean()) < 5 * expected / math.sqrt(x.size), name
    for expected, xs in pooled.items():
        assert np.concatenate(xs).std() == pytest.approx(expected, rel=0.02)
    assert len(pooled[resid]) == 2 * cfg.n_layer
    assert p["wte"].shape == (cfg.vocab_size, cfg.n_embd) and "lm_head" in p


def test_init_is_seeded():
    a, b, c = real_init(TINY, 0), nn.meta.unbox(init_params(TINY, jax.random.key(0))), real_init(TINY, 1)
    assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    assert not np.array_equal(a["wte"], c["wte"])
    # layers are initialised independently
    assert not np.array_equal(a["h_0"]["mlp"]["fc"]["kernel"], a["h_1"]["mlp"]["fc"]["kernel"])


def test_logical_axis_names_on_params():
    boxed = abstract_params(TINY)
    specs = flat(nn.get_partition_spec(boxed))
    assert tuple(specs["wte"]) == ("vocab", "embed")
    assert tuple(specs["h_0/mlp/fc/kernel"]) == ("embed", "mlp")
    assert tuple(specs["h_0/mlp/proj/kernel"]) == ("mlp", "embed")
    assert tuple(specs["h_0/attn/query/kernel"]) == ("embed", "heads", "head_dim")
    assert tuple(specs["h_0/attn/key/kernel"]) == ("embed", "kv_heads", "head_dim")
    assert tuple(specs["h_0/attn/out_kernel"]) == ("heads", "head_dim", "embed")
    scanned = flat(nn.get_partition_spec(abstract_params(cfg_of("scan"))))
    assert tuple(scanned["h/block/mlp/fc/kernel"]) == ("layers", "embed", "mlp")


# ----------------------------------------------------------------------------- config errors


def test_bad_head_split_names_the_keys():
    with pytest.raises(ValueError, match=r"n_embd.*n_head"):
        ModelConfig(n_embd=30, n_head=4)


def test_bad_kv_heads():
    with pytest.raises(ValueError, match="n_kv_head"):
        ModelConfig(n_embd=32, n_head=4, n_kv_head=3)


def test_rope_needs_even_head_dim():
    with pytest.raises(ValueError, match="rope"):
        ModelConfig(n_embd=12, n_head=4, pos="rope")  # head_dim 3


@pytest.mark.parametrize(
    "field,value", [("pos", "alibi"), ("norm", "batchnorm"), ("mlp", "relu"), ("remat", "some"), ("dtype", "float16")]
)
def test_unknown_choice_names_the_key(field, value):
    with pytest.raises(ValueError, match=rf"model\.{field}='{value}'"):
        ModelConfig(**{field: value})


def test_model_config_from_rejects_unknown_keys_and_presets():
    with pytest.raises(ValueError, match="n_layr"):
        model_config_from({"n_layr": 3})
    with pytest.raises(ValueError, match="gpt3"):
        model_config_from({"preset": "gpt3"})
