"""LoRA (gpt_jax.peft.lora), adapter files (gpt_jax.peft.io) and the method registry (gpt_jax.peft).

Tiny GPTs with numpy-built params (no init compile); one jitted apply per config.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from peft_params import abstract, make_params

from gpt_jax import peft
from gpt_jax.config import ModelConfig
from gpt_jax.model import GPT
from gpt_jax.peft import io as peft_io
from gpt_jax.peft.adalora import AdaLoRA
from gpt_jax.peft.adapters import Adapters
from gpt_jax.peft.base import Frozen, Full
from gpt_jax.peft.lora import DEFAULT_TARGETS, LoRA, find_targets, kernel_views
from gpt_jax.peft.prefix import PrefixTuning

TINY = ModelConfig(vocab_size=64, block_size=16, n_layer=2, n_head=4, n_embd=32)
IDS = jnp.asarray(np.random.default_rng(0).integers(0, 64, (2, 16)), jnp.int32)
SCAN = [False, True]


def cfg_of(scan: bool, **kw) -> ModelConfig:
    return TINY.replace(scan_layers=scan, **kw)


@functools.cache
def _apply(cfg: ModelConfig):
    return jax.jit(lambda p: GPT(cfg).apply({"params": p}, IDS))


def logits(cfg, params) -> np.ndarray:
    return np.asarray(_apply(cfg)(params))


def randomize_b(trainable, seed: int = 1, std: float = 0.1):
    r = np.random.default_rng(seed)
    return {
        k: {**v, "b": jnp.asarray(std * r.standard_normal(v["b"].shape), jnp.float32)} for k, v in trainable.items()
    }


def flat(tree):
    return {"/".join(k): v for k, v in traverse_util.flatten_dict(tree).items()}


# ----------------------------------------------------------------------------- LoRA semantics


@pytest.mark.parametrize("scan", SCAN)
def test_zero_init_is_bitwise_base(scan):
    cfg = cfg_of(scan)
    params = make_params(cfg)
    method = LoRA.from_config({"targets": "attn/(query|key|value|out_kernel)|mlp", "rank": 4, "alpha": 8.0}, 10)
    assert method == LoRA(targets="attn/(query|key|value|out_kernel)|mlp", rank=4, alpha=8.0)
    trainable, frozen = method.split(params, jax.random.key(0))
    prefix = "h/block" if scan else "h_0"
    assert f"{prefix}/attn/out_kernel" in trainable and f"{prefix}/mlp/fc/kernel" in trainable
    stacked = (cfg.n_layer,) if scan else ()
    q = trainable[f"{prefix}/attn/query/kernel"]
    assert q["a"].shape == (*stacked, 32, 4) and q["b"].shape == (*stacked, 4, 32)
    bound = 1 / np.sqrt(32)  # HF kaiming-uniform(a=sqrt(5)) on A
    assert np.abs(q["a"]).max() <= bound and np.abs(q["a"]).max() > 0.8 * bound and not np.any(q["b"])
    assert frozen is params
    np.testing.assert_array_equal(logits(cfg, method.combine(trainable, frozen)), logits(cfg, params))


@pytest.mark.parametrize("scan", SCAN)
def test_merge_unmerge_round_trip(scan):
    cfg = cfg_of(scan)
    params = make_params(cfg)
    method = LoRA(rank=4, alpha=8.0)
    trainable, _ = method.split(params, jax.random.key(0))
    trainable = randomize_b(trainable)
    merged = method.merge(params, trainable)
    base_logits, merged_logits = logits(cfg, params), logits(cfg, merged)
    assert np.abs(merged_logits - base_logits).max() > 1e-3  # the adapter does something
    np.testing.assert_allclose(merged_logits, logits(cfg, method.combine(trainable, params)), atol=1e-5)
    back = method.unmerge(merged, trainable)
    for k, v in flat(params).items():
        np.testing.assert_allclose(flat(back)[k], v, atol=1e-6, err_msg=k)
    np.testing.assert_allclose(logits(cfg, back), base_logits, atol=1e-5)


def test_delta_is_activation_space_lora():
    """x @ W_eff == x @ W + (alpha/r) (x A) B for every kernel view (q/k/v [D,H,K], out [H,K,D], 2-D, GQA)."""
    cfg = cfg_of(False, n_kv_head=2)
    params = make_params(cfg)
    method = LoRA(targets="h_1/(attn|mlp)", rank=3, alpha=6.0)
    trainable = randomize_b(method.split(params, jax.random.key(0))[0])
    merged = flat(method.merge(params, trainable))
    base = flat(params)
    r = np.random.default_rng(2)
    for path, entry in trainable.items():
        w, w_eff = np.asarray(base[path]), np.asarray(merged[path])
        n_in = 2 if path.endswith("out_kernel") else 1
        x = r.standard_normal((5, *w.shape[:n_in])).astype(np.float32)
        axes = (tuple(range(1, 1 + n_in)), tuple(range(n_in)))
        lora = (x.reshape(5, -1) @ np.asarray(entry["a"]) @ np.asarray(entry["b"])).reshape(5, *w.shape[n_in:])
        np.testing.assert_allclose(
            np.tensordot(x, w_eff, axes), np.tensordot(x, w, axes) + 2.0 * lora, atol=1e-5, err_msg=path
        )
    assert set(trainable) == {f"h_1/attn/{n}" for n in ("query/kernel", "key/kernel", "value/kernel", "out_kernel")} | {
        "h_1/mlp/fc/kernel",
        "h_1/mlp/proj/kernel",
    }
    assert trainable["h_1/attn/key/kernel"]["b"].shape == (3, 2 * 8)  # GQA: out = kv_heads * head_dim


def test_targets_errors_and_views():
    params = abstract(cfg_of(False))
    with pytest.raises(ValueError, match=r"peft.lora.targets='nope' matches no kernel.*h_0/attn/key/kernel"):
        LoRA(targets="nope").split(params, jax.random.key(0))
    with pytest.raises(ValueError, match="not a valid regex"):
        LoRA(targets="(")
    with pytest.raises(ValueError, match="peft.lora.rank=0"):
        LoRA(rank=0)
    assert list(find_targets(params, "mlp/fc")) == ["h_0/mlp/fc/kernel", "h_1/mlp/fc/kernel"]
    assert not any("bias" in p or "wte" in p for p in find_targets(params, "."))  # kernels only
    v = kernel_views(abstract(cfg_of(True)))["h/block/attn/out_kernel"]
    assert (v.batch, v.fan_in, v.fan_out) == ((2,), 32, 32)


@pytest.mark.parametrize("scan", SCAN)
def test_embedding_targets(scan, tmp_path):
    """HF nn.Embedding LoRA on the tied wte: opt-in by fullmatch, zero-init exact, merge == combine, round trips."""
    cfg = cfg_of(scan, pos="learned")
    params = make_params(cfg)
    query = "h/block/attn/query/kernel" if scan else "h_0/attn/query/kernel"
    assert not any(p in ("wte", "wpe") for p in find_targets(params, DEFAULT_TARGETS))
    assert not any(p in ("wte", "wpe") for p in find_targets(params, "."))  # search-style patterns: kernels only
    assert list(find_targets(params, "wte")) == ["wte"] and set(find_targets(params, "wte|wpe")) == {"wte", "wpe"}
    found = find_targets(params, "wte|attn/query")
    assert "wte" in found and query in found and "wpe" not in found
    v = found["wte"]
    assert (v.shape, v.batch, v.fan_in, v.fan_out, v.embedding) == ((64, 32), (), 64, 32, True)

    method = LoRA(targets="wte|attn/query", rank=4, alpha=8.0)
    trainable, frozen = method.split(params, jax.random.key(0))
    b = np.asarray(trainable["wte"]["b"])
    assert trainable["wte"]["a"].shape == (64, 4) and b.shape == (4, 32) and not np.any(trainable["wte"]["a"])
    assert 0.7 < b.std() < 1.3 and np.abs(b).max() <= np.sqrt(3.0)  # HF: per-token A = 0, shared B ~ unit variance
    assert np.any(trainable[query]["a"]) and not np.any(trainable[query]["b"])  # kernels keep A random, B = 0
    base_logits = logits(cfg, params)
    np.testing.assert_array_equal(logits(cfg, method.combine(trainable, frozen)), base_logits)
    np.testing.assert_array_equal(logits(cfg, method.merge(params, trainable)), base_logits)

    # At init the gradient reaches only the per-token rows A, through the input lookup and the tied head.
    loss = lambda t: jnp.sum(GPT(cfg).apply({"params": method.combine(t, frozen)}, IDS) ** 2)
    g = jax.jit(jax.grad(loss))(trainable)
    assert np.abs(g["wte"]["a"]).max() > 0 and not np.any(g["wte"]["b"])

    trainable = randomize_b(trainable)
    a = np.random.default_rng(2).standard_normal((64, 4)).astype(np.float32)
    trainable["wte"] = {**trainable["wte"], "a": jnp.asarray(a)}
    merged = method.merge(params, trainable)
    np.testing.assert_allclose(
        flat(merged)["wte"] - flat(params)["wte"], 2.0 * a @ np.asarray(trainable["wte"]["b"]), atol=1e-5
    )
    merged_logits = logits(cfg, merged)
    assert np.abs(merged_logits - base_logits).max() > 1e-3
    np.testing.assert_allclose(merged_logits, logits(cfg, method.combine(trainable, frozen)), atol=1e-5)
    back = method.unmerge(merged, trainable)
    for k, w in flat(params).items():
        np.testing.assert_allclose(flat(back)[k], w, atol=1e-6, err_msg=k)
    np.testing.assert_allclose(logits(cfg, back), base_logits, atol=1e-5)

    # A first SGD step on a features-only loss (a classifier reads no LM head) moves only the wte rows of
    # tokens in the batch: the per-token factor learns first. (B-first init moved all 64 rows at once.)
    feats = lambda t: jnp.sum(GPT(cfg).apply({"params": method.combine(t, frozen)}, IDS, features=True) ** 2)
    g0 = jax.jit(jax.grad(feats))(method.split(params, jax.random.key(0))[0])
    moved = np.flatnonzero(np.abs(np.asarray(g0["wte"]["a"])).sum(-1))
    np.testing.assert_array_equal(moved, np.unique(np.asarray(IDS)))
    assert len(moved) < 64

    # Rank dropout applies to the embedding adapter like any other target.
    drop = LoRA(targets="wte|attn/query", rank=4, alpha=8.0, dropout=0.5)
    d0, d1 = drop.deltas(trainable), drop.deltas(trainable, jax.random.key(1))
    assert d1["wte"].shape == (64, 32) and not np.allclose(d0["wte"], d1["wte"])

    # Adapter files carry the wte entry and load back onto a fresh base.
    config = {"method": "lora", "lora": {"targets": method.targets, "rank": 4, "alpha": 8.0, "dropout": 0.0}}
    path = tmp_path / "adapter.safetensors"
    peft_io.save_adapter(path, "lora", config, trainable, peft_io.base_shapes(params))
    _, _, loaded = peft_io.load_adapter(path, peft_io.base_shapes(make_params(cfg, seed=7)))
    for part in ("a", "b"):
        np.testing.assert_array_equal(loaded["wte"][part], trainable["wte"][part])


def test_rank_dropout_only_with_rng():
    cfg = cfg_of(False)
    params = make_params(cfg)
    method = LoRA(rank=8, alpha=8.0, dropout=0.5)
    trainable = randomize_b(method.split(params, jax.random.key(0))[0])
    eval_a, eval_b = method.combine(trainable, params), method.combine(trainable, params, None)
    for k in flat(eval_a):
        np.testing.assert_array_equal(flat(eval_a)[k], flat(eval_b)[k])
    d1 = method.deltas(trainable, jax.random.key(1))
    d2 = method.deltas(trainable, jax.random.key(2))
    d0 = method.deltas(trainable)
    path = "h_0/attn/query/kernel"
    assert not np.allclose(d1[path], d0[path]) and not np.allclose(d1[path], d2[path])
    # The step's delta is a rank-masked delta rescaled by 1/(1-p): rebuild it from the kept components.
    entry = trainable[path]
    keep = np.asarray(
        jax.random.bernoulli(jax.random.fold_in(jax.random.key(1), sorted(trainable).index(path)), 0.5, (8,))
    )
    want = 1.0 * (np.asarray(entry["a"]) * keep / 0.5) @ np.asarray(entry["b"])
    np.testing.assert_allclose(d1[path], want, atol=1e-6)
    no_drop = LoRA(rank=8, alpha=8.0, dropout=0.0)
    np.testing.assert_array_equal(no_drop.deltas(trainable, jax.random.key(1))[path], no_drop.deltas(trainable)[path])


def test_gradients_flow_through_combine():
    """HF init: at B = 0 only B gets gradient (dL/dA = scale * dW B^T = 0); stacked (scan) targets."""
    cfg = cfg_of(True)
    params = make_params(cfg)
    method = LoRA(rank=4, alpha=8.0)
    trainable, frozen = method.split(params, jax.random.key(0))

    def loss(t):  # any smooth function of the combined kernels will do
        return sum(jnp.sum(jnp.sin(w) ** 2) for w in jax.tree.leaves(method.combine(t, frozen)["h"]["block"]["attn"]))

    grads = jax.jit(jax.grad(loss))(trainable)
    for path, g in grads.items():
        assert not np.any(g["a"]) and np.abs(g["b"]).max() > 0, path


def test_lora_plus_scales_only_b_updates():
    """LoRA+ (peft.lora.plus_ratio): after Adam, B's step is ratio x plain LoRA's; A's is unchanged."""
    import optax

    params = make_params(cfg_of(False))
    trainable, _ = LoRA(rank=2).split(params, jax.random.key(0))
    trainable = randomize_b(trainable)
    grads = jax.tree.map(lambda x: jnp.cos(3.0 * x) + 0.1, trainable)  # non-zero everywhere
    steps = {}
    for ratio in (1.0, 16.0):
        tx = LoRA(rank=2, plus_ratio=ratio).wrap_optimizer(optax.adamw(1e-3, weight_decay=0.1))
        steps[ratio], _ = tx.update(grads, tx.init(trainable), trainable)
    for path in trainable:
        np.testing.assert_array_equal(steps[16.0][path]["a"], steps[1.0][path]["a"])
        np.testing.assert_allclose(steps[16.0][path]["b"], 16.0 * steps[1.0][path]["b"], rtol=1e-6)
        assert np.abs(steps[1.0][path]["b"]).max() > 0
    c = {"method": "lora", "lora": {"plus_ratio": 4.0}}
    assert peft.make_method(c, 10).plus_ratio == 4.0
    with pytest.raises(ValueError, match=r"peft.lora.plus_ratio=0.0 must be > 0"):
        LoRA(plus_ratio=0.0)


# ----------------------------------------------------------------------------- adapter files


def test_save_load_round_trip_on_fresh_base(tmp_path):
    cfg = cfg_of(False)
    base0, base1 = make_params(cfg, seed=0), make_params(cfg, seed=7)
    method = LoRA(rank=4, alpha=8.0)
    trainable = randomize_b(method.split(base0, jax.random.key(0))[0])
    config = {"method": "lora", "lora": {"targets": method.targets, "rank": 4, "alpha": 8.0, "dropout": 0.0}}
    path = tmp_path / "adapter.safetensors"
    size = peft_io.save_adapter(path, "lora", config, trainable, peft_io.base_shapes(base0))
    assert size == os.path.getsize(path)
    name, got_config, loaded = peft_io.load_adapter(path, peft_io.base_shapes(base1))
    assert name == "lora" and got_config == config
    loaded_method = peft.make_method(got_config, 0)
    assert isinstance(loaded_method, LoRA) and loaded_method == method
    for k in trainable:
        np.testing.assert_array_equal(loaded[k]["a"], trainable[k]["a"])
    delta0 = {k: flat(method.merge(base0, trainable))[k] - v for k, v in flat(base0).items()}
    delta1 = {k: flat(loaded_method.merge(base1, loaded))[k] - v for k, v in flat(base1).items()}
    for k in delta0:
        np.testing.assert_allclose(delta1[k], delta0[k], atol=1e-6, err_msg=k)
    assert np.abs(delta1["h_0/attn/query/kernel"]).max() > 1e-3


def test_adapter_file_with_the_old_flat_peft_config_loads_nested(tmp_path):
    """Adapter files written before the per-method sections hold the flat peft section: it reads nested."""
    cfg = cfg_of(False)
    base = make_params(cfg)
    method = LoRA(rank=4, alpha=8.0, plus_ratio=2.0)
    trainable = randomize_b(method.split(base, jax.random.key(0))[0])
    old = {
        "method": "lora",
        "targets": method.targets,
        "rank": 4,
        "alpha": 8.0,
        "dropout": 0.0,
        "lora_plus_ratio": 2.0,
        "target_rank": 4,
        "adapter_dim": 16,
        "prefix_len": 8,
        "prefix_hidden": 0,
    }
    path = tmp_path / "old.safetensors"
    peft_io.save_adapter(path, "lora", old, trainable, peft_io.base_shapes(base))
    _, got_config, _ = peft_io.load_adapter(path, peft_io.base_shapes(base))
    want = {"targets": method.targets, "rank": 4, "alpha": 8.0, "dropout": 0.0, "plus_ratio": 2.0}
    assert got_config == {"method": "lora", "lora": want}
    assert peft.make_method(got_config, 0) == method


def test_load_errors(tmp_path):
    cfg = cfg_of(False)
    method = LoRA(rank=2)
    trainable = method.split(abstract(cfg), jax.random.key(0))[0]
    path = tmp_path / "a.safetensors"
    peft_io.save_adapter(path, "lora", {"rank": 2}, trainable, peft_io.base_shapes(abstract(cfg)))
    wider = peft_io.base_shapes(abstract(cfg.replace(n_embd=64)))
    with pytest.raises(
        ValueError,
        match=r"^adapter was trained on a base with h_0/attn/key/bias of shape \(4, 8\); this base has \(4, 16\); load it on that base$",
    ):
        peft_io.load_adapter(path, wider)
    with pytest.raises(ValueError, match="is not a file"):
        peft_io.load_adapter(tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="is not a file"):
        peft_io.load_adapter(tmp_path)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="not a safetensors file") as e:
        peft_io.load_adapter(junk)
    assert "\n" not in str(e.value)
    import safetensors.numpy

    other = tmp_path / "other.safetensors"
    other.write_bytes(safetensors.numpy.save({"x": np.zeros(3, np.float32)}))
    with pytest.raises(ValueError, match="not a gpt_jax adapter"):
        peft_io.load_adapter(other)


def test_crash_mid_save_keeps_old_file(tmp_path, monkeypatch):
    cfg = cfg_of(False)
    method = LoRA(rank=2)
    old = method.split(abstract(cfg), jax.random.key(0))[0]
    new = method.split(abstract(cfg), jax.random.key(1))[0]
    path = tmp_path / "a.safetensors"
    shapes = peft_io.base_shapes(abstract(cfg))
    peft_io.save_adapter(path, "lora", {"rank": 2}, old, shapes)

    def half_then_crash(f, data):
        f.write(data[: len(data) // 2])
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(peft_io, "_write", half_then_crash)
    with pytest.raises(OSError, match="simulated"):
        peft_io.save_adapter(path, "lora", {"rank": 2}, new, shapes)
    assert sorted(os.listdir(tmp_path)) == ["a.safetensors"]  # no temp file left behind
    _, _, loaded = peft_io.load_adapter(path, shapes)
    np.testing.assert_array_equal(loaded["h_0/attn/query/kernel"]["a"], old["h_0/attn/query/kernel"]["a"])


def test_bf16_and_nested_trees_round_trip(tmp_path):
    tree = {
        "h_0": {"adapter": {"kernel": jnp.ones((3, 2), jnp.bfloat16) * 1.5}},
        "x/y": {"z": jnp.arange(4, dtype=jnp.int32)},
    }
    path = tmp_path / "t.safetensors"
    peft_io.save_adapter(path, "adapters", {}, tree, {})
    _, _, got = peft_io.load_adapter(path, {})
    assert got["h_0"]["adapter"]["kernel"].dtype == jnp.bfloat16 and float(got["h_0"]["adapter"]["kernel"][0, 0]) == 1.5
    np.testing.assert_array_equal(got["x/y"]["z"], np.arange(4))


def test_adapter_file_size_4_layer_256_wide(tmp_path):
    """LoRA r=8 on q/k/v/out of a 4-layer, 256-wide GPT: 16 matrices x (256*8 + 8*256) f32 = 256 KiB of tensors."""
    cfg = ModelConfig(vocab_size=256, block_size=64, n_layer=4, n_head=4, n_embd=256)
    base = abstract(cfg)
    trainable = LoRA(rank=8).split(base, jax.random.key(0))[0]
    path = tmp_path / "lora_r8.safetensors"
    size = peft_io.save_adapter(path, "lora", {"rank": 8}, trainable, peft_io.base_shapes(base))
    summary = peft.trainable_summary(trainable, base)
    print(f"\nLoRA r=8 q/k/v/out adapter file, 4 layers x 256 wide: {size} bytes ({size / 1024:.1f} KiB); {summary}")
    assert summary["trainable_params"] == 16 * 2 * 256 * 8
    assert 4 * summary["trainable_params"] < size < 4 * summary["trainable_params"] + 16 * 1024


# ----------------------------------------------------------------------------- registry


def test_make_method_and_summary():
    assert isinstance(peft.make_method({"method": "full"}, 10), Full)
    assert isinstance(peft.make_method({"method": "frozen"}, 10), Frozen)
    from configs.base import base_config

    c = base_config().peft
    c.method = "lora"
    c.lora.rank = 3
    m = peft.make_method(c, 100)
    assert m == LoRA(**c.lora.to_dict())  # every key of the section is a field, and the defaults agree
    c.method = "adalora"
    a = peft.make_method(c, 100)
    assert a == AdaLoRA(**c.adalora.to_dict(), num_steps=100)
    c.method = "adapters"
    assert peft.make_method(c, 100) == Adapters(dim=c.adapters.dim)
    c.method = "prefix"
    assert peft.make_method(c, 100) == PrefixTuning(length=c.prefix.length, hidden=c.prefix.hidden)
    with pytest.raises(
        ValueError,
        match=r"peft.method='qlora' is not one of \('full', 'frozen', 'lora', 'adalora', 'adapters', 'prefix'\)",
    ):
        peft.make_method({"method": "qlora"}, 10)
    s = peft.trainable_summary({"a": jnp.zeros((2, 3))}, {"w": jnp.zeros((4, 6))})
    assert s == {"trainable_params": 6, "total_params": 30, "trainable_pct": 20.0}
    assert peft.trainable_summary({}, {})["trainable_pct"] == 0.0
