"""Issue 19, the text GAN task in the trainer: each alternating update moves only its own sub-model, the
Gumbel-softmax generator loss reaches G through D, bad configs are refused with one line."""

import copy
import pathlib

import jax
import jax.numpy as jnp
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
    ],
)
def test_bad_config_is_one_line(key, value, match):
    s = seqgan.default_seqgan_section()
    s[key] = value
    with pytest.raises(ValueError, match=match) as e:
        seqgan._check(s, 64)
    assert "\n" not in str(e.value)
