"""Model-side PEFT: adapters, prefix tuning, hidden-state output, attention-weights sow, and the
Adapters / PrefixTuning methods (split/combine/graft/fold). Tiny shapes; one compile per config."""

from __future__ import annotations

import dataclasses
import functools
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from gpt_jax import generate as gen
from gpt_jax.config import ModelConfig
from gpt_jax.model import (
    GPT,
    NO_EXTENSIONS,
    ExtendedConfig,
    Extensions,
    count_params,
    extend,
    extensions_of,
    init_params,
)
from gpt_jax.peft.adapters import Adapter, AdapterModules, Adapters
from gpt_jax.peft.base import graft
from gpt_jax.peft.prefix import PrefixSlots, PrefixTuning, fold

TINY = ModelConfig(vocab_size=64, block_size=32, n_layer=2, n_head=4, n_embd=32)
B, L = 3, 16
ADAPT = extend(TINY, sublayer=AdapterModules(4))
PREFIX = extend(TINY, kv_prefix=PrefixSlots(3))
# everything at once: reparameterised prefix, GQA, adapters, scanned layers
MIXED = extend(TINY.replace(n_kv_head=2, scan_layers=True), sublayer=AdapterModules(4), kv_prefix=PrefixSlots(2, 8))
CHANGED_AT = (None, 0, 5, L - 1)  # row i differs from row 0 only at this position


def flat(params) -> dict:
    return {"/".join(k): v for k, v in traverse_util.flatten_dict(params).items()}


def unflat(d: dict):
    return traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in d.items()})


def make_params(cfg: ModelConfig, seed: int = 0):
    """Random params of the right shapes, built in numpy (no init compile); every leaf non-zero."""
    r = np.random.default_rng(seed)
    shapes = flat(nn.meta.unbox(jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))))
    out = {}
    for name, s in shapes.items():
        x = r.standard_normal(s.shape).astype(np.float32)
        leaf = name.rsplit("/", 1)[-1]
        scale = 1.0 if leaf.startswith("prefix_") else 0.02 if "bias" in leaf else 0.2
        out[name] = 1.0 + 0.1 * x if leaf == "scale" else scale * x
    return unflat({k: jnp.asarray(v) for k, v in out.items()})


def unrolled_to_scanned(params, n_layer: int):
    out = {k: v for k, v in params.items() if not k.startswith("h_")}
    out["h"] = {"block": jax.tree.map(lambda *xs: jnp.stack(xs), *[params[f"h_{i}"] for i in range(n_layer)])}
    return out


@functools.cache
def _apply_fn(cfg: ModelConfig, mutable: bool = False, features: bool = False):
    def f(params, ids):
        if mutable:
            return GPT(cfg).apply({"params": params}, ids, mutable=["intermediates"])
        return GPT(cfg).apply({"params": params}, ids, features=features)

    return jax.jit(f)


def apply(cfg, params, ids, **kw):
    return _apply_fn(cfg, **kw)(params, ids)


def causal_batch(seed: int = 1) -> jax.Array:
    base = np.random.default_rng(seed).integers(0, TINY.vocab_size, (L,))
    rows = [base.copy() for _ in CHANGED_AT]
    for row, t in zip(rows, CHANGED_AT):
        if t is not None:
            row[t] = (row[t] + 1) % TINY.vocab_size
    return jnp.asarray(np.stack(rows), jnp.int32)


def assert_causal(logits) -> None:
    logits = np.asarray(logits)
    for row, t in enumerate(CHANGED_AT):
        if t is None:
            continue
        np.testing.assert_allclose(logits[row, :t], logits[0, :t], atol=1e-6, rtol=0)
        assert np.abs(logits[row, t:] - logits[0, t:]).max() > 1e-3, (row, t)


# ----------------------------------------------------------------------------- config


def test_plain_config_has_no_extensions_and_extending_keeps_the_architecture():
    assert extensions_of(TINY) == NO_EXTENSIONS and not hasattr(TINY, "extensions")
    base = flat(jax.eval_shape(lambda: init_params(TINY, jax.random.key(0))))
    assert not [n for n in base if "adapter" in n or "prefix" in n]
    assert isinstance(MIXED, ExtendedConfig) and MIXED.extensions == Extensions(AdapterModules(4), PrefixSlots(2, 8))
    assert MIXED.base() == TINY.replace(n_kv_head=2, scan_layers=True) and type(MIXED.base()) is ModelConfig
    assert MIXED.base() != MIXED and ADAPT != TINY and hash(MIXED) == hash(extend(MIXED, kv_prefix=PrefixSlots(2, 8)))
    assert MIXED.replace(scan_layers=False).extensions == MIXED.extensions  # replace keeps them
    # the architecture (its fields: what model_config.json holds) is the base's
    assert dataclasses.asdict(MIXED) == dataclasses.asdict(MIXED.base())
    with pytest.raises(ValueError, match="n_embd=30 is not divisible"):
        extend(TINY.replace(n_embd=32), sublayer=AdapterModules(4)).replace(n_embd=30)


def test_param_tree_and_counts():
    d, a, h, k, p = TINY.n_embd, 4, TINY.n_head, TINY.head_dim, 3
    base = count_params(jax.eval_shape(lambda: init_params(TINY, jax.random.key(0))))
    shapes = {
        n: x.shape
        for n, x in flat(nn.meta.unbox(jax.eval_shape(lambda: init_params(ADAPT, jax.random.key(0))))).items()
    }
    assert shapes["h_0/adapter_attn/down/kernel"] == (d, a) and shapes["h_1/adapter_mlp/up/kernel"] == (a, d)
    assert shapes["h_0/adapter_attn/down/bias"] == (a,) and shapes["h_0/adapter_mlp/up/bias"] == (d,)
    assert count_params(make_params(ADAPT)) == base + TINY.n_layer * 2 * (d * a + a + a * d + d)
    pre = flat(make_params(PREFIX))
    assert pre["h_0/attn/prefix/prefix_key"].shape == pre["h_1/attn/prefix/prefix_value"].shape == (h, p, k)
    assert count_params(pre) == base + TINY.n_layer * 2 * h * p * k
    mixed = flat(make_params(MIXED))
    n, g, f = TINY.n_layer, 2, 8
    assert mixed["h/block/attn/prefix/prefix_embed"].shape == (n, 2, d)
    assert mixed["h/block/attn/prefix/prefix_fc/kernel"].shape == (n, d, f)
    assert mixed["h/block/attn/prefix/prefix_proj/kernel"].shape == (n, f, 2, g, k)
    # scanned and unrolled: the same count
    assert count_params(mixed) == count_params(make_params(MIXED.replace(scan_layers=False)))


# ----------------------------------------------------------------------------- adapters


@functools.cache
def adapter_params():
    """(base params, adapter-model params: the base grafted in, each adapter as its module inits it).

    Only the adapters get their real init (a whole-model init compiles for half a minute here).
    """
    base = make_params(TINY)
    new = flat(make_params(ADAPT, seed=9))
    for i in range(TINY.n_layer):
        for name in ("adapter_attn", "adapter_mlp"):
            init = Adapter(TINY, 4).init(jax.random.key(10 * i + len(name)), jnp.zeros((1, 1, TINY.n_embd)))
            new.update({f"h_{i}/{name}/{k}": v for k, v in flat(nn.meta.unbox(init["params"])).items()})
    return base, graft(unflat(new), base)


def test_fresh_adapters_equal_the_base_model():
    base, grafted = adapter_params()
    assert all(np.all(x == 0) for n, x in flat(grafted).items() if "adapter" in n and "/up/" in n)
    assert all(np.std(x) > 0 for n, x in flat(grafted).items() if "adapter" in n and n.endswith("down/kernel"))
    ids = causal_batch()
    np.testing.assert_allclose(apply(ADAPT, grafted, ids), apply(TINY, base, ids), atol=1e-6, rtol=0)


def test_trained_adapters_change_logits_and_stay_causal():
    base, grafted = adapter_params()
    trained = flat(grafted)
    r = np.random.default_rng(3)
    for n in trained:
        if "adapter" in n and "/up/" in n:
            trained[n] = jnp.asarray(0.2 * r.standard_normal(trained[n].shape), jnp.float32)
    ids = causal_batch()
    logits = np.asarray(apply(ADAPT, unflat(trained), ids))
    assert np.abs(logits - np.asarray(apply(TINY, base, ids))).max() > 1e-3
    assert_causal(logits)


# ----------------------------------------------------------------------------- prefix


def test_prefix_model_is_causal_and_differs_from_base():
    params = make_params(PREFIX)
    ids = causal_batch()
    logits = np.asarray(apply(PREFIX, params, ids))
    assert_causal(logits)
    no_prefix = {k: v for k, v in flat(params).items() if "prefix" not in k}
    assert np.abs(logits - np.asarray(apply(TINY, unflat(no_prefix), ids))).max() > 1e-3


def test_mixed_scanned_equals_unrolled_and_dot_product_equals_einsum():
    scanned = make_params(MIXED)
    unrolled_cfg = MIXED.replace(scan_layers=False)
    stacked = flat(scanned)
    unrolled = {k: v for k, v in stacked.items() if not k.startswith("h/")}
    for i in range(TINY.n_layer):
        unrolled.update({f"h_{i}/" + k[len("h/block/") :]: v[i] for k, v in stacked.items() if k.startswith("h/")})
    unrolled = unflat(unrolled)
    ids = causal_batch()
    want = np.asarray(apply(MIXED, scanned, ids))
    assert_causal(want)
    np.testing.assert_allclose(apply(unrolled_cfg, unrolled, ids), want, atol=1e-5, rtol=1e-5)
    dpa = MIXED.replace(attention="dot_product")
    np.testing.assert_allclose(apply(dpa, scanned, ids), want, atol=1e-5, rtol=1e-5)


def test_prefix_remat_forward_unchanged():
    params = make_params(PREFIX)
    ids = causal_batch()
    np.testing.assert_allclose(
        apply(PREFIX.replace(remat="full"), params, ids), apply(PREFIX, params, ids), atol=1e-6, rtol=1e-6
    )


@pytest.mark.parametrize("cfg", [PREFIX, MIXED], ids=["prefix", "mixed"])
def test_greedy_generate_matches_full_forward(cfg):
    """Every decode step attends the prefix: greedy tokens = argmax of one forward over prompt + output."""
    params = make_params(cfg, seed=2)
    r = np.random.default_rng(5)
    prompts = [r.integers(0, cfg.vocab_size, n).astype(np.int32) for n in (5, 9)]  # left-padded differently
    n_new = 6
    out = gen.generate(cfg, params, prompts, gen.GenerateOptions(max_new_tokens=n_new, temperature=0.0))
    assert out.shape == (2, n_new)
    rows = [np.concatenate([p, o]) for p, o in zip(prompts, out)]
    ids = np.zeros((2, L), np.int32)  # right padding: causal, so it cannot move earlier logits
    for b, row in enumerate(rows):
        ids[b, : len(row)] = row
    logits = np.asarray(apply(cfg, params, jnp.asarray(ids)))
    for b, p in enumerate(prompts):
        want = logits[b, len(p) - 1 : len(p) - 1 + n_new].argmax(-1)
        np.testing.assert_array_equal(out[b], want)


# ----------------------------------------------------------------------------- features / attention maps


def test_features_are_the_final_hidden_states():
    params = make_params(TINY)
    ids = causal_batch()
    x = apply(TINY, params, ids, features=True)
    assert x.shape == (len(CHANGED_AT), L, TINY.n_embd) and x.dtype == jnp.float32
    np.testing.assert_allclose(x @ params["wte"].T, apply(TINY, params, ids), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "cfg", [PREFIX.replace(remat="full"), MIXED.replace(attention="dot_product")], ids=["prefix_remat", "mixed_dpa"]
)
def test_attention_weights_are_sown(cfg):
    params = make_params(cfg)
    ids = causal_batch()
    logits, state = apply(cfg, params, ids, mutable=True)
    np.testing.assert_allclose(logits, apply(cfg, params, ids), atol=1e-5, rtol=1e-5)  # same model
    p = cfg.extensions.kv_prefix.length
    s = p + L
    if cfg.scan_layers:
        (w,) = state["intermediates"]["h"]["block"]["attn"]["attention_weights"]
        assert w.shape == (cfg.n_layer, len(CHANGED_AT), cfg.n_head, L, s)
        layers = list(w)
    else:
        layers = []
        for i in range(cfg.n_layer):
            (w,) = state["intermediates"][f"h_{i}"]["attn"]["attention_weights"]
            layers.append(w)
    for w in layers:
        w = np.asarray(w)
        assert w.shape == (len(CHANGED_AT), cfg.n_head, L, s) and w.dtype == np.float32
        np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
        assert (w[..., :p] > 0).all()  # every query sees the prefix slots
        future = ~np.tril(np.ones((L, L), bool))
        assert (w[..., p:][..., future] == 0).all()  # and no future token


def test_plain_apply_sows_nothing():
    params = make_params(TINY)
    run = lambda p: GPT(TINY).apply({"params": p}, causal_batch(), mutable=["params"])
    _, state = jax.eval_shape(run, params)  # tracing shows what is sown; no compile
    assert "intermediates" not in state


# ----------------------------------------------------------------------------- methods


def test_adapters_split_combine_round_trip():
    method = Adapters.from_config({"dim": 4}, num_steps=10)
    assert method.model_config(TINY) == ADAPT
    _, params = adapter_params()
    trainable, frozen = method.split(params, jax.random.key(0))
    names = set(flat(trainable))
    assert names and all("/adapter_attn/" in n or "/adapter_mlp/" in n for n in names)
    assert not [n for n in flat(frozen) if "adapter" in n]
    assert len(names) + len(flat(frozen)) == len(flat(params))
    back = method.combine(trainable, frozen)
    assert jax.tree.structure(back) == jax.tree.structure(params)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params)))
    assert method.regularizer(trainable) == 0.0
    with pytest.raises(ValueError, match="no adapter leaves"):
        method.split(make_params(TINY), None)


def test_prefix_split_combine_and_fold():
    method = PrefixTuning.from_config({"length": 2, "hidden": 8}, num_steps=10)
    base = extend(TINY.replace(n_kv_head=2, scan_layers=True), sublayer=AdapterModules(4))
    cfg = method.model_config(base)
    assert cfg == MIXED  # a second method's modules join the first's
    params = make_params(cfg)
    trainable, frozen = method.split(params, None)
    assert set(flat(trainable)) == {n for n in flat(params) if "/attn/prefix/" in n}
    back = method.combine(trainable, frozen)
    assert flat(back).keys() == flat(params).keys()
    assert all(np.array_equal(back_v, flat(params)[n]) for n, back_v in flat(back).items())
    # fold: direct slots computing the same model, without the MLP
    folded_cfg, folded = method.fold(cfg, back)
    assert folded_cfg == extend(cfg, kv_prefix=PrefixSlots(2, 0))
    assert flat(folded)["h/block/attn/prefix/prefix_key"].shape == (TINY.n_layer, 2, 2, TINY.head_dim)
    assert count_params(folded) == count_params(make_params(folded_cfg))
    ids = causal_batch()
    np.testing.assert_allclose(apply(folded_cfg, folded, ids), apply(cfg, params, ids), atol=1e-5, rtol=1e-5)
    # fold of the trainable tree alone
    _, t_folded = fold(cfg, trainable)
    assert set(flat(t_folded)) == {"h/block/attn/prefix/prefix_key", "h/block/attn/prefix/prefix_value"}


def test_graft_keeps_boxes_and_refuses_other_backbones():
    base = make_params(TINY)
    boxed = jax.tree.map(jnp.zeros_like, jax.eval_shape(lambda: init_params(ADAPT, jax.random.key(0))))
    out = graft(boxed, base)
    assert isinstance(out["wte"], nn.LogicallyPartitioned)
    np.testing.assert_array_equal(out["wte"].value, base["wte"])
    with pytest.raises(ValueError, match="wte has shape"):
        graft(make_params(ADAPT.replace(vocab_size=32)), base)
    with pytest.raises(ValueError, match="base param h_0/.* has no place"):
        graft(make_params(ADAPT.replace(scan_layers=True)), base)


@pytest.mark.parametrize(
    "method,kw,match",
    [
        (Adapters, {"dim": 0}, "peft.adapters.dim=0"),
        (PrefixTuning, {"length": 0}, "peft.prefix.length=0"),
        (PrefixTuning, {"length": 2, "hidden": -1}, "peft.prefix.hidden=-1"),
    ],
)
def test_methods_refuse_bad_sizes(method, kw, match):
    with pytest.raises(ValueError, match=match) as e:
        method.from_config(kw, 1)
    assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------- workdirs / export


def test_saved_model_config_with_the_old_peft_fields_resumes(tmp_path):
    """model_config.json from before held adapter_dim / prefix_len / prefix_hidden: they are not
    compared (the method rebuilds its modules), so the run resumes; a real architecture change is refused."""
    import ml_collections

    from gpt_jax import run_config

    config = ml_collections.ConfigDict({"model": {"n_layer": 2}})
    fields = dataclasses.asdict(TINY)
    old = {**fields, "adapter_dim": 4, "prefix_len": 3, "prefix_hidden": 0}
    (tmp_path / "model_config.json").write_text(json.dumps(old))
    run_config.check_and_save(tmp_path, config, fields)
    assert json.loads((tmp_path / "model_config.json").read_text()) == fields
    (tmp_path / "model_config.json").write_text(json.dumps(old))
    with pytest.raises(ValueError, match=r"model\.n_embd=32 .* 64"):
        run_config.check_and_save(tmp_path, config, dataclasses.asdict(TINY.replace(n_embd=64)))


@pytest.mark.parametrize("cfg", [ADAPT, PREFIX], ids=["adapters", "prefix"])
def test_hf_export_refuses_extensions(cfg):
    from gpt_jax import hf

    with pytest.raises(hf.HFError, match="extension modules") as e:
        hf.check_exportable(cfg)
    assert "\n" not in str(e.value)
    hf.check_exportable(TINY)
    hf.check_exportable(cfg.base())
