"""Training tests: the pure step (overfit, scan == sequential, grad accumulation, weight-decay
mask, sharded == single device), and the loop (train_and_evaluate outputs, bitwise resume after a
SIGTERM, deterministic batches).

The step tests use tiny shapes and share one real init; the loop tests share one 40-step run of
configs/tiny.py (the `tiny_run` session fixture in conftest.py).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from configs.base import base_config
from gpt_jax import sharding as shd
from gpt_jax import trainer as trainer_lib
from gpt_jax.checkpoint import Checkpointer, checkpoint_dir, restore_target
from gpt_jax.config import ModelConfig
from gpt_jax.metrics import read_metrics
from gpt_jax.models import gpt
from gpt_jax.objectives.loss import causal_lm_loss
from gpt_jax.optim import decay_mask, make_optimizer
from gpt_jax.tasks.lm_state import create_train_state, make_eval_step, make_train_step, state_shardings
from gpt_jax.train import TrainState, scan_steps

CFG = ModelConfig(vocab_size=64, block_size=16, n_layer=2, n_head=4, n_embd=32)
BATCH = 8


def host_batches(seed: int, k: int, b: int = BATCH, cfg: ModelConfig = CFG) -> dict[str, np.ndarray]:
    """[K, B, L] inputs/targets of random tokens (targets = inputs shifted, like real LM data)."""
    toks = np.random.default_rng(seed).integers(0, cfg.vocab_size, (k, b, cfg.block_size + 1)).astype(np.int32)
    return {"inputs": toks[..., :-1], "targets": toks[..., 1:]}


def single_device_mesh():
    return shd.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])


def rules(mesh):
    """The mesh + logical-rule scope the Trainer traces under (Trainer.rules, without a Trainer)."""
    return trainer_lib.Trainer.rules(types.SimpleNamespace(mesh=mesh))


def tree_equal(a, b) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    if jax.tree.structure(a) != jax.tree.structure(b):
        return False
    for x, y in zip(la, lb):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        if np.asarray(x).tobytes() != np.asarray(y).tobytes():
            return False
    return True


def assert_tree_allclose(a, b, atol, rtol=0.0):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(
            np.asarray(x), np.asarray(y), atol=atol, rtol=rtol, err_msg=jax.tree_util.keystr(path)
        )


@pytest.fixture(scope="module")
def init_state():
    """A real create_train_state on one device (compiled once: threefry init is slow to compile here)."""
    tx = optax.adam(1e-3)
    mesh = single_device_mesh()
    _, shardings = state_shardings(CFG, tx, mesh)
    return create_train_state(CFG, tx, 0, shardings)


def fresh_state(init_state, tx) -> TrainState:
    """init_state's params and rng with `tx`'s fresh optimizer state (copied: steps donate)."""
    params = jax.tree.map(jnp.copy, init_state.params)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), rng=init_state.rng)


K = 4  # steps per compiled call in these tests


def optim_config(**kw):
    """The production optimizer (AdamW, global-norm clip, masked decay), lr 3e-3, short warmup."""
    o = base_config().optim
    o.lr, o.warmup_steps, o.schedule = 3e-3, 4, "constant"
    for k, v in kw.items():
        o[k] = v
    return o


@pytest.fixture(scope="module")
def stepper():
    """(tx, train_step, jit(train_step), jit(scan_steps(train_step))) shared by the step tests."""
    tx, schedule = make_optimizer(optim_config(), num_steps=100)
    step = make_train_step(CFG, tx, schedule)
    return types.SimpleNamespace(tx=tx, schedule=schedule, step=step, one=jax.jit(step), scan=jax.jit(scan_steps(step)))


def device_batches(host) -> dict[str, jax.Array]:
    return {k: jnp.asarray(v) for k, v in host.items()}


# ----------------------------------------------------------------------------- the pure step


def test_overfits_one_repeated_batch(init_state, stepper):
    repeated = device_batches(jax.tree.map(lambda x: np.repeat(x, K, axis=0), host_batches(0, 1)))
    state, losses = fresh_state(init_state, stepper.tx), []
    for _ in range(100 // K):
        state, metrics = stepper.scan(state, repeated)
        losses.extend(np.asarray(metrics["train_loss"]))
    assert len(losses) == 100 and int(state.step) == 100
    assert abs(losses[0] - math.log(CFG.vocab_size)) < 0.3  # starts at chance
    assert losses[-1] < 1.0, losses[::10]
    np.testing.assert_allclose(metrics["lr"], 3e-3, rtol=1e-6)
    assert np.all(np.asarray(metrics["grad_norm"]) > 0)


def test_scan_steps_equals_sequential_steps(init_state, stepper):
    batches = host_batches(1, K)
    state_seq, seq_metrics = fresh_state(init_state, stepper.tx), []
    for i in range(K):
        state_seq, m = stepper.one(state_seq, device_batches({n: v[i] for n, v in batches.items()}))
        seq_metrics.append(m)
    state_scan, scan_metrics = stepper.scan(fresh_state(init_state, stepper.tx), device_batches(batches))
    assert int(state_scan.step) == int(state_seq.step) == K
    assert_tree_allclose(state_scan.params, state_seq.params, atol=1e-6)
    assert_tree_allclose(state_scan.opt_state, state_seq.opt_state, atol=1e-6)
    for name in ("train_loss", "grad_norm", "lr"):
        np.testing.assert_allclose(scan_metrics[name], [m[name] for m in seq_metrics], rtol=1e-6, err_msg=name)
    # warmup: the lr of step 0 is 0, then it rises
    assert float(scan_metrics["lr"][0]) == 0.0 and 0 < float(scan_metrics["lr"][1]) < float(scan_metrics["lr"][-1])


def test_grad_accum_matches_one_big_batch(init_state, stepper):
    batches = device_batches(host_batches(3, K))
    accum = jax.jit(scan_steps(make_train_step(CFG, stepper.tx, stepper.schedule, grad_accum=2)))
    s1, m1 = stepper.scan(fresh_state(init_state, stepper.tx), batches)
    s2, m2 = accum(fresh_state(init_state, stepper.tx), batches)
    np.testing.assert_allclose(m2["train_loss"], m1["train_loss"], rtol=1e-5)
    np.testing.assert_allclose(m2["grad_norm"], m1["grad_norm"], rtol=1e-5)
    assert_tree_allclose(s2.params, s1.params, atol=1e-5)
    assert not tree_equal(s1.params, init_state.params)  # it did update


def test_causal_lm_loss_weights():
    logits = jnp.asarray(np.random.default_rng(0).standard_normal((2, 3, 5)), jnp.float32)
    targets = jnp.asarray([[0, 1, 2], [3, 4, 0]], jnp.int32)
    logp = jax.nn.log_softmax(logits)
    nll = -np.take_along_axis(np.asarray(logp), np.asarray(targets)[..., None], -1)[..., 0]
    total, count = causal_lm_loss(logits, {"targets": targets})
    np.testing.assert_allclose(total, nll.sum(), rtol=1e-6)
    assert float(count) == 6
    w = jnp.asarray([[1, 1, 0], [0, 1, 1]], jnp.float32)
    total, count = causal_lm_loss(logits, {"targets": targets, "weights": w})
    np.testing.assert_allclose(total, (nll * np.asarray(w)).sum(), rtol=1e-6)
    assert float(count) == 4


def test_eval_step_is_the_mean_loss(init_state):
    from gpt_jax.model import GPT

    batches = jax.tree.map(jnp.asarray, host_batches(4, 3))
    got = jax.jit(make_eval_step(CFG))(init_state.params, batches)

    @jax.jit
    def reference(params, b):
        logits = GPT(CFG).apply({"params": params}, b["inputs"].reshape(-1, CFG.block_size))
        return optax.softmax_cross_entropy_with_integer_labels(logits, b["targets"].reshape(-1, CFG.block_size)).mean()

    np.testing.assert_allclose(got, reference(init_state.params, batches), rtol=1e-5)


# ----------------------------------------------------------------------------- weight decay


def test_decay_mask_names(init_state):
    params = {**init_state.params, "lm_head": jnp.zeros((CFG.n_embd, CFG.vocab_size))}  # as if untied
    flat = {"/".join(k): v for k, v in traverse_util.flatten_dict(decay_mask(params)).items()}
    decayed = sorted(n for n, v in flat.items() if v)
    kept = sorted(n for n, v in flat.items() if not v)
    for n in decayed:
        assert n == "lm_head" or n.endswith("kernel"), n
    for n in kept:
        assert n in ("wte", "wpe") or n.endswith(("bias", "scale")), n
    for needed in (
        "lm_head",
        "h_0/attn/query/kernel",
        "h_0/attn/key/kernel",
        "h_0/attn/value/kernel",
        "h_0/attn/out_kernel",
        "h_0/mlp/fc/kernel",
        "h_1/mlp/proj/kernel",
    ):
        assert flat[needed], needed
    for needed in (
        "wte",
        "wpe",
        "ln_f/scale",
        "ln_f/bias",
        "h_0/attn/query/bias",
        "h_0/attn/out_bias",
        "h_0/ln_1/scale",
    ):
        assert not flat[needed], needed
    with_emb = traverse_util.flatten_dict(decay_mask(params, decay_embeddings=True))
    assert with_emb[("wte",)] and with_emb[("wpe",)] and not with_emb[("ln_f", "scale")]


@pytest.mark.parametrize("name", ["adamw", "lion", "sgd"])
def test_weight_decay_applies_only_to_masked_params(init_state, name):
    """Zero gradients: decayed params shrink by exactly (1 - lr*wd), the rest do not move."""
    optim = base_config().optim
    optim.name, optim.schedule, optim.warmup_steps, optim.lr, optim.weight_decay = name, "constant", 0, 0.1, 0.5
    optim.b1 = 0.0 if name == "sgd" else optim.b1
    tx, schedule = make_optimizer(optim, num_steps=10)
    assert float(schedule(0)) == pytest.approx(0.1)
    params = init_state.params

    @jax.jit
    def one_update(p):
        updates, _ = tx.update(jax.tree.map(jnp.zeros_like, p), tx.init(p), p)
        return optax.apply_updates(p, updates)

    new = one_update(params)
    mask = traverse_util.flatten_dict(decay_mask(params))
    flat_old, flat_new = traverse_util.flatten_dict(params), traverse_util.flatten_dict(new)
    for k, old in flat_old.items():
        if mask[k]:
            np.testing.assert_allclose(flat_new[k], np.asarray(old) * (1 - 0.1 * 0.5), rtol=1e-6, err_msg=str(k))
        else:
            assert np.array_equal(flat_new[k], old), k


# ----------------------------------------------------------------------------- sharding


def spec_of(x) -> tuple:
    spec = tuple(x.sharding.spec)
    return spec + (None,) * (x.ndim - len(spec))


def test_sharded_step_matches_single_device(init_state, stepper):
    """data=2 x fsdp=2 x tensor=2 over the 8 simulated devices, jitted with in/out shardings and
    the logical rules in scope exactly as Trainer does; the reference is the plain one-device step."""
    assert jax.device_count() == 8
    mesh = shd.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    abstract, shardings = state_shardings(CFG, stepper.tx, mesh)
    state8 = create_train_state(CFG, stepper.tx, 0, shardings)
    assert tree_equal(state8.params, init_state.params)  # initialisation does not depend on the mesh
    assert tree_equal(state8.rng, init_state.rng)
    assert jax.tree.map(lambda x: (x.shape, x.dtype), state8.params) == jax.tree.map(
        lambda x: (x.shape, x.dtype), abstract.params
    )

    batch_sharding = shd.batch_sharding(mesh, ndim=3, leading=1)
    with rules(mesh):
        fn = jax.jit(
            scan_steps(stepper.step),
            in_shardings=(shardings, batch_sharding),
            out_shardings=(shardings, shd.replicated(mesh)),
            donate_argnums=0,
        )
        host = host_batches(5, K)
        s8, m8 = fn(state8, {k: jax.device_put(v, batch_sharding) for k, v in host.items()})
    s1, m1 = stepper.scan(fresh_state(init_state, stepper.tx), device_batches(host))

    np.testing.assert_allclose(m8["train_loss"], m1["train_loss"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(m8["grad_norm"], m1["grad_norm"], rtol=1e-5)
    assert_tree_allclose(s8.params, s1.params, atol=1e-5)
    assert not tree_equal(s1.params, init_state.params)  # it did update
    assert int(s8.step) == K

    # the parameters really are sharded per the logical rules
    p = s8.params
    fc = p["h_0"]["mlp"]["fc"]["kernel"]  # [embed, mlp]
    assert spec_of(fc) == ("fsdp", "tensor")
    assert {s.data.shape for s in fc.addressable_shards} == {(CFG.n_embd // 2, CFG.ff_dim // 2)}
    q = p["h_0"]["attn"]["query"]["kernel"]  # [embed, heads, head_dim]
    assert spec_of(q) == ("fsdp", "tensor", None)
    assert {s.data.shape for s in q.addressable_shards} == {(CFG.n_embd // 2, CFG.n_head // 2, CFG.head_dim)}
    assert spec_of(p["h_0"]["attn"]["out_kernel"]) == ("tensor", None, "fsdp")  # [heads, head_dim, embed]
    assert spec_of(p["h_1"]["mlp"]["proj"]["kernel"]) == ("tensor", "fsdp")  # [mlp, embed]
    assert spec_of(p["wte"]) == ("tensor", "fsdp")  # [vocab, embed]
    assert spec_of(p["ln_f"]["scale"]) == (None,)
    assert len(fc.sharding.device_set) == 8
    # Adam moments follow their parameter; counters and the step are replicated
    adam = [x for x in jax.tree.leaves(s8.opt_state, is_leaf=lambda x: hasattr(x, "mu")) if hasattr(x, "mu")]
    assert adam, "no Adam state found"
    mu = adam[0].mu
    assert spec_of(mu["h_0"]["mlp"]["fc"]["kernel"]) == ("fsdp", "tensor")
    assert spec_of(mu["h_0"]["attn"]["query"]["kernel"]) == ("fsdp", "tensor", None)
    assert s8.step.sharding.is_fully_replicated


def test_muon_state_follows_param_shardings():
    """Muon labels params with a callable, which optax.tree_map_params cannot trace: its momentum must
    still take each kernel's sharding (matched by name and shape), not fall back to replicated."""
    mesh = shd.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    tx, _ = make_optimizer(optim_config(name="muon"), 10, gpt.matrix_dims)
    _, shardings = state_shardings(CFG, tx, mesh)
    flat = {
        tuple(getattr(k, "key", getattr(k, "name", getattr(k, "idx", None))) for k in path): s
        for path, s in jax.tree_util.tree_flatten_with_path(shardings.opt_state)[0]
    }
    fc = [s for path, s in flat.items() if path[-4:] == ("h_0", "mlp", "fc", "kernel")]
    wte = [s for path, s in flat.items() if path[-1] == "wte"]
    assert fc and all(tuple(s.spec) == ("fsdp", "tensor") for s in fc)  # Muon momentum (+ Adam's masked slots)
    assert wte and all(tuple(s.spec)[:2] == ("tensor", "fsdp") for s in wte)  # Adam on embeddings
    counters = [s for path, s in flat.items() if path[-1] == "count"]
    assert counters and all(s.is_fully_replicated for s in counters)


def test_state_shardings_drop_axes_that_do_not_divide():
    """A 65-token char vocab cannot split over tensor=2: that dim is replicated instead."""
    cfg = CFG.replace(vocab_size=65)
    mesh = shd.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    abstract, shardings = state_shardings(cfg, optax.adam(1e-3), mesh)
    assert abstract.params["wte"].shape == (65, cfg.n_embd)
    assert tuple(shardings.params["wte"].spec)[:2] == (None, "fsdp")


# ----------------------------------------------------------------------------- the training loop


def test_next_chunk_stops_at_every_event():
    c = base_config()
    c.train.num_steps, c.train.steps_per_call, c.train.log_every, c.train.eval_every = 45, 10, 10, 15
    c.checkpoint.every = 20
    steps, s = [], 0
    while s < c.train.num_steps:
        k = trainer_lib.next_chunk(s, c)
        assert 1 <= k <= c.train.steps_per_call
        s += k
        steps.append(s)
    assert steps == [10, 15, 20, 30, 40, 45]
    c.train.eval_every, c.checkpoint.every, c.train.log_every = 0, 0, 0
    assert trainer_lib.next_chunk(0, c) == 10 and trainer_lib.next_chunk(40, c) == 5


def test_train_and_evaluate_outputs(tiny_run):
    config, workdir, summary = tiny_run
    n = config.train.num_steps
    rows = read_metrics(workdir)
    assert [r["step"] for r in rows] == list(range(10, n + 1, 10))
    for r in rows:
        for key in ("train_loss", "lr", "grad_norm", "tokens_per_sec", "mfu"):
            assert key in r and math.isfinite(r[key]), (r["step"], key)
        assert r["tokens_per_sec"] > 0 and 0 < r["mfu"] < 1
        assert ("val_loss" in r) == (r["step"] % config.train.eval_every == 0), r
    evals = [r for r in rows if "val_loss" in r]
    assert [r["step"] for r in evals] == [20, 40]
    assert evals[0]["val_ppl"] == pytest.approx(math.exp(evals[0]["val_loss"]))
    vocab = json.loads((workdir / "model_config.json").read_text())["vocab_size"]
    assert vocab == 65  # tiny_shakespeare's characters
    assert rows[0]["train_loss"] < math.log(vocab)  # learning
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert evals[-1]["val_loss"] < math.log(vocab) - 0.5

    on_disk = json.loads((workdir / "summary.json").read_text())
    assert on_disk["status"] == summary["status"] == "completed"
    assert on_disk["step"] == n
    assert on_disk["val_loss"] == summary["val_loss"] == evals[-1]["val_loss"]
    assert on_disk["train_loss"] == rows[-1]["train_loss"]
    assert on_disk["devices"] == 8 and on_disk["backend"] == "cpu"
    assert on_disk["tokens_per_sec"] > 0 and on_disk["mfu"] > 0
    assert "sample" not in on_disk
    assert isinstance(summary["sample"], str)
    assert summary["sample"].startswith(config.sample.prompt)
    assert len(summary["sample"]) == len(config.sample.prompt) + config.sample.num_tokens

    ckpt = Checkpointer(checkpoint_dir(workdir), save_every=0, read_only=True)
    assert ckpt.steps() == [20, 40]
    for name in ("config.json", "model_config.json", "tokenizer.json"):
        assert (workdir / name).is_file(), name
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["train"]["num_steps"] == n and saved["model"]["n_layer"] == 2


def restore_final(config, workdir, step):
    tr = trainer_lib.Trainer(config, workdir, write=False)  # just the abstract state + shardings
    with Checkpointer(checkpoint_dir(workdir), save_every=0, read_only=True) as ckpt:
        return ckpt.restore(restore_target(tr.abstract, tr.shardings), step)


def test_resume_after_sigterm_is_bitwise_identical(tiny_run, tmp_path, monkeypatch):
    config, workdir_a, summary_a = tiny_run
    config = config.copy_and_resolve_references()
    config.sample.num_tokens = 0
    preempt_at = 30  # between periodic checkpoints (every 20): the SIGTERM save is a forced one

    real_run_steps = trainer_lib.Trainer.run_steps
    sent = []

    def run_steps(self, state, step, k):
        out = real_run_steps(self, state, step, k)
        if step + k == preempt_at and not sent:
            handler = signal.getsignal(signal.SIGTERM)
            assert handler not in (signal.SIG_DFL, signal.SIG_IGN, None), "no SIGTERM handler installed"
            sent.append(step + k)
            os.kill(os.getpid(), signal.SIGTERM)  # handled in this (main) thread before the loop's check
        return out

    monkeypatch.setattr(trainer_lib.Trainer, "run_steps", run_steps)
    workdir_b = tmp_path / "b"
    handler_before = signal.getsignal(signal.SIGTERM)
    first = trainer_lib.train_and_evaluate(config, workdir_b)
    assert sent == [preempt_at]
    assert first["status"] == "preempted" and first["step"] == preempt_at
    assert signal.getsignal(signal.SIGTERM) == handler_before  # the loop puts the old handler back
    ckpt_b = Checkpointer(checkpoint_dir(workdir_b), save_every=0, read_only=True)
    assert preempt_at in ckpt_b.steps()

    monkeypatch.setattr(trainer_lib.Trainer, "run_steps", real_run_steps)
    second = trainer_lib.train_and_evaluate(config, workdir_b)
    assert second["status"] == "completed" and second["step"] == config.train.num_steps

    rows_a, rows_b = read_metrics(workdir_a), read_metrics(workdir_b)
    assert [r["step"] for r in rows_b] == [r["step"] for r in rows_a]  # no duplicated or lost steps
    for ra, rb in zip(rows_a, rows_b):
        for key in ("train_loss", "lr", "grad_norm", "val_loss", "val_ppl"):
            assert ra.get(key) == rb.get(key), (ra["step"], key, ra.get(key), rb.get(key))
    assert second["val_loss"] == summary_a["val_loss"]
    assert second["train_loss"] == summary_a["train_loss"]

    state_a, meta_a = restore_final(config, workdir_a, config.train.num_steps)
    state_b, meta_b = restore_final(config, workdir_b, config.train.num_steps)
    assert meta_a == meta_b
    assert int(state_a.step) == config.train.num_steps
    assert tree_equal(state_a, state_b)


def test_batches_are_deterministic(tiny_config, tmp_path):
    config = tiny_config()
    a = trainer_lib.Trainer(config, tmp_path / "a")
    b = trainer_lib.Trainer(config, tmp_path / "b", write=False)
    x1, x2, y = a.batches(5, 3), a.batches(5, 3), b.batches(5, 3)
    for key in ("inputs", "targets"):
        assert x1[key].shape == (3, config.train.batch_size, config.model.block_size)
        assert x1[key].dtype == jnp.int32
        assert np.array_equal(x1[key], x2[key]) and np.array_equal(x1[key], y[key])
        # a chunk is the concatenation of the single steps: resuming mid-chunk sees the same data
        assert np.array_equal(x1[key][1:], a.batches(6, 2)[key])
        assert spec_of(x1[key]) == (None, ("data", "fsdp"), None)
    assert not np.array_equal(x1["inputs"][0], x1["inputs"][1])
    np.testing.assert_array_equal(x1["inputs"][:, :, 1:], x1["targets"][:, :, :-1])
    # a different seed draws different windows
    config.seed = 1
    c = trainer_lib.Trainer(config, tmp_path / "c", write=False)
    assert not np.array_equal(c.batches(5, 3)["inputs"], x1["inputs"])


def test_restarting_a_finished_run_only_re_evaluates(tiny_run, tmp_path):
    config, run_dir, summary_a = tiny_run
    workdir = tmp_path / "done"
    shutil.copytree(run_dir, workdir)
    config = config.copy_and_resolve_references()
    config.sample.num_tokens = 0
    again = trainer_lib.train_and_evaluate(config, workdir)
    assert again["status"] == "completed" and again["step"] == config.train.num_steps
    assert again["val_loss"] == summary_a["val_loss"]  # same params, same fixed eval windows
    assert Checkpointer(checkpoint_dir(workdir), save_every=0, read_only=True).steps() == [20, 40]
    assert read_metrics(workdir) == read_metrics(run_dir)  # nothing trained, nothing logged twice
