"""AdaLoRA (gpt_jax.peft.adalora): exact-base init, orthogonality penalty, the jitted rank allocator's budget."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util
from peft_params import abstract, make_params

from gpt_jax.config import ModelConfig
from gpt_jax.model import GPT
from gpt_jax.peft import io as peft_io
from gpt_jax.peft.adalora import AdaLoRA, AdaLoRAState

TINY = ModelConfig(vocab_size=64, block_size=16, n_layer=2, n_head=4, n_embd=32)
IDS = jnp.asarray(np.random.default_rng(0).integers(0, 64, (2, 16)), jnp.int32)


@pytest.mark.parametrize("scan", [False, True])
def test_zero_init_is_exactly_base(scan):
    cfg = TINY.replace(scan_layers=scan)
    params = make_params(cfg)
    method = AdaLoRA(rank=4, target_rank=2, num_steps=50)
    trainable, frozen = method.split(params, jax.random.key(0))
    path = "h/block/attn/query/kernel" if scan else "h_0/attn/query/kernel"
    e = trainable[path]
    stacked = (2,) if scan else ()
    assert e["p"].shape == (*stacked, 32, 4) and e["lam"].shape == (*stacked, 4) and e["q"].shape == (*stacked, 4, 32)
    assert not np.any(e["lam"]) and 0.015 < float(jnp.std(e["p"])) < 0.025  # HF: P, Q ~ N(0, 0.02), Λ = 0
    combined = method.combine(trainable, frozen)
    for k, v in traverse_util.flatten_dict(params).items():
        np.testing.assert_array_equal(traverse_util.flatten_dict(combined)[k], v)
    if not scan:  # and so the logits are the base's, bit for bit
        f = jax.jit(lambda p: GPT(cfg).apply({"params": p}, IDS))
        np.testing.assert_array_equal(np.asarray(f(combined)), np.asarray(f(params)))
    # The delta is (alpha / r) P diag(Λ) Q once Λ moves.
    lam = jnp.arange(1.0, 5.0)
    moved = {**trainable, path: {**e, "lam": jnp.broadcast_to(lam, e["lam"].shape)}}
    p0, q0 = np.asarray(e["p"]).reshape(-1, 32, 4)[0], np.asarray(e["q"]).reshape(-1, 4, 32)[0]
    want = 4.0 * (p0 * np.arange(1.0, 5.0)) @ q0
    got = np.asarray(method.deltas(moved)[path]).reshape(-1, 32, 32)[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_orthogonality_regularizer():
    method = AdaLoRA(rank=4, target_rank=2, orth_reg=0.5)
    r = np.random.default_rng(0)
    p = np.linalg.qr(r.standard_normal((2, 32, 4)))[0]  # orthonormal columns, per layer
    q = np.swapaxes(np.linalg.qr(r.standard_normal((2, 16, 4)))[0], -1, -2)  # orthonormal rows
    ortho = {"x": {"p": jnp.asarray(p, jnp.float32), "lam": jnp.ones((2, 4)), "q": jnp.asarray(q, jnp.float32)}}
    assert abs(float(method.regularizer(ortho))) < 1e-5
    rand = {
        "x": {
            "p": jnp.asarray(r.standard_normal((2, 32, 4)), jnp.float32),
            "lam": jnp.ones((2, 4)),
            "q": jnp.asarray(q, jnp.float32),
        },
        "y": {
            "p": jnp.asarray(p[0], jnp.float32),
            "lam": jnp.ones(4),
            "q": jnp.asarray(r.standard_normal((4, 8)), jnp.float32),
        },
    }
    eye = np.eye(4)

    def pen(p, q):
        return np.sum((p.T @ p - eye) ** 2) + np.sum((q @ q.T - eye) ** 2)

    x, y = rand["x"], rand["y"]
    want = (
        0.5 * (pen(np.asarray(x["p"][0]), q[0]) + pen(np.asarray(x["p"][1]), q[1]) + pen(p[0], np.asarray(y["q"]))) / 3
    )
    got = float(method.regularizer(rand))
    assert got > 0.1 and got == pytest.approx(want, rel=1e-4)


def hf_budget(t, init, target, t_init, t_final):
    """HF PEFT RankAllocator.budget_schedule."""
    if t <= t_init:
        return init
    if t >= t_final:
        return target
    return int((init - target) * (1 - (t - t_init) / (t_final - t_init)) ** 3 + target)


def test_budget_schedule_with_adam():
    """Toy regression through combine: pruning starts after init_warmup, follows the cubic budget at
    every mask step, pruned Λ are exactly 0 in between, and the last final_warmup steps hold exactly
    target_rank * matrices non-zero Λ with a fixed mask."""
    T = 60
    cfg = TINY.replace(scan_layers=True)
    frozen = make_params(cfg)
    method = AdaLoRA(rank=4, target_rank=2, init_warmup=0.1, final_warmup=0.3, mask_interval=5, num_steps=T)
    assert (method.t_init, method.t_final) == (6, 42)
    trainable, _ = method.split(frozen, jax.random.key(0))
    matrices = AdaLoRA.num_matrices(trainable)
    assert matrices == 4 * 2  # q/k/v/out x 2 stacked layers
    r = np.random.default_rng(1)
    goal = {
        k: jnp.asarray(0.05 * r.standard_normal((2, 32, 3)) @ r.standard_normal((2, 3, 32)), jnp.float32)
        for k in trainable
    }
    tx = method.wrap_optimizer(optax.adam(1e-2))
    state = tx.init(trainable)

    @jax.jit
    def step(tr, st):
        def loss(tr):
            d = method.deltas(tr)
            return sum(jnp.sum((d[k] - goal[k]) ** 2) for k in d) + method.regularizer(tr)

        u, st = tx.update(jax.grad(loss)(tr), st, tr)
        return optax.apply_updates(tr, u), st

    budget_now = 4 * matrices
    keep_at_final = ipt_at_final = None
    for t in range(1, T + 1):
        trainable, state = step(trainable, state)
        assert int(state.count) == t
        if t > method.t_init and (t % 5 == 0 and t < method.t_final or t == method.t_final):
            budget_now = hf_budget(t, 4 * matrices, 2 * matrices, method.t_init, method.t_final)
            assert int(method.budget(t, matrices)) == budget_now
        nonzero = sum(AdaLoRA.rank_allocation(trainable).values())
        keep = sum(int(np.sum(k["lam"])) for k in state.keep.values())
        assert nonzero == keep == budget_now, (t, nonzero, keep, budget_now)
        if t <= method.t_init:
            assert nonzero == 4 * matrices  # nothing pruned before init_warmup
        if t == method.t_final:
            keep_at_final, ipt_at_final = jax.device_get((state.keep, state.ipt))
    assert budget_now == 2 * matrices == 16
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.keep), keep_at_final)  # mask held
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.ipt), ipt_at_final)  # scores frozen
    alloc = AdaLoRA.rank_allocation(trainable)
    assert set(alloc) == {
        f"h/block/attn/{n}[{i}]" for n in ("query/kernel", "key/kernel", "value/kernel", "out_kernel") for i in (0, 1)
    }
    assert sum(alloc.values()) == 16 and all(0 <= v <= 4 for v in alloc.values())
    print(f"\nAdaLoRA rank allocation after {T} steps (rank 4 -> target 2 avg): {alloc}")


def test_optimizer_state_and_errors(tmp_path):
    params = abstract(TINY)
    method = AdaLoRA.from_config({"rank": 4, "target_rank": 2, "mask_interval": 3}, 100)
    assert (method.rank, method.target_rank, method.mask_interval, method.num_steps) == (4, 2, 3, 100)
    trainable, _ = method.split(params, jax.random.key(0))
    tx = method.wrap_optimizer(optax.adamw(1e-3))
    state = tx.init(trainable)
    assert isinstance(state, AdaLoRAState)
    # The trainer shards optimizer slots like params via optax.tree_map_params: the state must support it.
    specs = jax.tree.map(lambda _: "P", trainable)
    mapped = optax.tree_map_params(tx, lambda _, s: s, state, specs, transform_non_params=lambda _: "R")
    assert mapped.count == "R" and mapped.keep == specs and mapped.ipt == specs
    with pytest.raises(ValueError, match="call tx.update"):
        tx.update(trainable, state)
    with pytest.raises(ValueError, match="needs the run's step count"):
        AdaLoRA(rank=4, target_rank=2).wrap_optimizer(optax.sgd(0.1))
    with pytest.raises(ValueError, match=r"peft.adalora.target_rank=8 must be in \[1, peft.adalora.rank=4\]"):
        AdaLoRA(rank=4, target_rank=8)
    with pytest.raises(ValueError, match="budget schedule is empty"):
        AdaLoRA(rank=4, target_rank=2, init_warmup=0.6, final_warmup=0.5, num_steps=100)
    # Rank dropout masks Λ only with an rng; the adapter round-trips through an adapter file.
    d = AdaLoRA(rank=4, target_rank=2, dropout=0.5)
    moved = {k: {**v, "lam": jnp.ones_like(v["lam"])} for k, v in trainable.items()}
    path = "h_0/attn/query/kernel"
    assert not np.allclose(d.deltas(moved, jax.random.key(3))[path], d.deltas(moved)[path])
    f = tmp_path / "ada.safetensors"
    peft_io.save_adapter(
        f, "adalora", {"method": "adalora", "adalora": {"rank": 4}}, moved, peft_io.base_shapes(params)
    )
    name, _, loaded = peft_io.load_adapter(f, peft_io.base_shapes(params))
    assert name == "adalora" and AdaLoRA.rank_allocation(loaded) == {k: 4 for k in trainable}
