"""Issue 19, the text GAN task in the trainer: each alternating update moves only its own sub-model, the
Gumbel-softmax generator loss reaches G through D, bad configs are refused with one line."""

import copy
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpt_jax import run_config
from gpt_jax.tasks import seqgan
from gpt_jax.train import make_updates_step
from gpt_jax.trainer import Trainer

REPO = pathlib.Path(__file__).resolve().parents[1]


def tiny_config():
    c = run_config.load_config(str(REPO / "configs" / "gan" / "shakespeare_seqgan.py"))
    c.model.preset = None  # a random tiny generator (no init_from): the mechanics, not a result
    c.model.n_layer, c.model.n_head, c.model.n_embd, c.model.block_size = 1, 2, 16, 8
    s = c.seqgan
    s.seq_len, s.prompt_len = 8, 2
    s.discriminator.n_layer, s.discriminator.n_head, s.discriminator.n_embd = 1, 2, 16
    s.baseline, s.rollouts, s.rollout_every = "ema", 2, 2  # every update kind: D, G (with rollouts), baseline
    c.train.batch_size = 8
    c.train.eval_batches = 1
    return c


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    return Trainer(tiny_config(), tmp_path_factory.mktemp("seqgan_unit"), write=False)


def test_each_update_changes_only_its_sub_model(trainer):
    state = trainer.init_state()
    batch = {k: v[0] for k, v in trainer.batches(0, 1).items()}
    by_name = {u.name: u for u in trainer.updates}
    assert [u.name for u in trainer.updates] == ["discriminator", "generator", "baseline"]
    for name, update in by_name.items():
        new, metrics = jax.jit(make_updates_step([update]))(state, batch)
        assert bool(metrics["finite"]), name
        for other in by_name:
            same = jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), new.params[other], state.params[other])
            assert all(jax.tree.leaves(same)) == (other != name), (name, other)


def test_gumbel_generator_loss_reaches_the_generator_through_d(trainer):
    task = copy.copy(trainer.task)
    task.s = copy.deepcopy(task.s)
    task.s.estimator, task.s.mle_weight = "gumbel", 0.0  # D's gradient is G's only signal
    state = trainer.init_state()
    batch = {k: v[0] for k, v in trainer.batches(0, 1).items()}
    loss = lambda g: task.g_loss({**state.params, "generator": g}, {}, batch, jax.random.key(0))[0]
    grads = jax.jit(jax.grad(loss))(state.params["generator"])
    norms = [float(jnp.abs(x).max()) for x in jax.tree.leaves(grads)]
    assert all(map(jnp.isfinite, norms)) and max(norms) > 0


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("estimator", "ppo", "config.seqgan.estimator='ppo' is not one of"),
        ("baseline", "median", "config.seqgan.baseline='median' is not one of"),
        ("prompt_len", 0, "need 1 <= prompt_len"),
        ("seq_len", 65, "need 1 <= prompt_len"),
        ("d_pretrain_steps", -1, "config.seqgan.d_pretrain_steps=-1 must be >= 0"),
    ],
)
def test_bad_config_is_one_line(key, value, match):
    """(discriminator.init is checked below: it sits one level down.)"""
    s = seqgan.default_seqgan_section()
    s[key] = value
    with pytest.raises(ValueError, match=match) as e:
        seqgan._check(s, 64)
    assert "\n" not in str(e.value)


PRETRAIN = 40  # D-only steps of the pretraining test


@pytest.fixture(scope="module")
def pretrain_trainer(tmp_path_factory):
    c = tiny_config()
    c.seqgan.baseline, c.seqgan.rollouts = "mean", 0
    c.seqgan.d_pretrain_steps = PRETRAIN
    c.seqgan.d_optim.lr = 3e-3
    c.train.batch_size, c.train.eval_batches = 16, 4
    return Trainer(c, tmp_path_factory.mktemp("seqgan_pretrain"), write=False)


def test_d_pretraining_separates_real_from_random_rows_and_leaves_g_alone(pretrain_trainer):
    """A random tiny G writes near-uniform characters: D, trained alone, must tell them from text (issue 19's
    flat ln 4). G's params and optimizer stay exactly as initialised until the pretraining ends."""
    tr = pretrain_trainer
    state = tr.init_state()
    g0, g_opt0 = jax.device_get(
        (state.params["generator"], state.opt_state["generator"])
    )  # host copies: the step donates
    before = tr.evaluate(state.params)
    for step in range(PRETRAIN):
        state, metrics = tr.run_steps(state, step, 1)
        assert float(metrics["generator_lr"][0]) == 0.0
    after = tr.evaluate(state.params)
    assert abs(before["val_d_accuracy"] - 0.5) < 0.15, before
    assert after["val_d_accuracy"] > 0.85 and after["val_d_loss"] < 1.0, after
    same = lambda a, b: all(jax.tree.leaves(jax.tree.map(lambda x, y: bool(jnp.array_equal(x, y)), a, b)))
    g_opt = state.opt_state["generator"]  # idle_for counts the idle steps; the Adam state inside is untouched
    assert int(g_opt["count"]) == PRETRAIN and same(g_opt["inner"], g_opt0["inner"])
    assert same(state.params["generator"], g0)
    state, metrics = tr.run_steps(state, PRETRAIN, 1)  # the first G update
    assert float(metrics["generator_lr"][0]) > 0 and not same(state.params["generator"], g0)


def test_discriminator_can_start_from_the_generator(tmp_path):
    c = tiny_config()
    c.seqgan.seq_len, c.seqgan.discriminator.init = 6, "generator"
    task = seqgan.SeqGANTask(c, tmp_path)
    params, _ = task.init(jax.random.key(0))
    g, d = params["generator"], params["discriminator"]["backbone"]
    assert task.d_cfg.n_embd == task.model_cfg.n_embd and task.d_cfg.block_size == 6
    np.testing.assert_array_equal(d["wpe"], g["wpe"][:6])
    np.testing.assert_array_equal(d["h_0"]["mlp"]["fc"]["kernel"], g["h_0"]["mlp"]["fc"]["kernel"])
    assert task.d_logits(params["discriminator"], jnp.zeros((2, 6), jnp.int32)).shape == (2,)


def test_bad_discriminator_init_is_one_line():
    s = seqgan.default_seqgan_section()
    s.discriminator.init = "oracle"
    with pytest.raises(ValueError, match="config.seqgan.discriminator.init='oracle' is not one of") as e:
        seqgan._check(s, 64)
    assert "\n" not in str(e.value)
