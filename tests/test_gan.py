"""Issue 19, the image GAN's pieces: losses against hand-computed values, the transposed convolution, the
alternating updates (each moves only its own sub-model), the EMA, the Fréchet distance and the entropy."""

import math
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from gpt_jax import run_config
from gpt_jax.analysis import digit_eval
from gpt_jax.models import dcgan
from gpt_jax.objectives import gan_losses
from gpt_jax.train import TrainState, make_updates_step
from gpt_jax.trainer import Trainer

REPO = pathlib.Path(__file__).resolve().parents[1]

REAL = jnp.array([2.0, -1.0])
FAKE = jnp.array([0.5, -3.0])


def test_discriminator_losses_by_hand():
    # non-saturating: -log sigmoid(r) - log(1 - sigmoid(f)) = log(1 + e^-r) + log(1 + e^f)
    ns = [
        math.log(1 + math.exp(-2)) + math.log(1 + math.exp(0.5)),
        math.log(1 + math.exp(1)) + math.log(1 + math.exp(-3)),
    ]
    np.testing.assert_allclose(gan_losses.d_loss("non_saturating", REAL, FAKE), ns, rtol=1e-6)
    np.testing.assert_allclose(ns, [1.1010052, 1.3618491], rtol=1e-6)
    # hinge: max(0, 1 - r) + max(0, 1 + f)
    np.testing.assert_allclose(gan_losses.d_loss("hinge", REAL, FAKE), [0.0 + 1.5, 2.0 + 0.0])
    # wasserstein critic: f - r
    np.testing.assert_allclose(gan_losses.d_loss("wasserstein", REAL, FAKE), [-1.5, -2.0])


def test_generator_losses_by_hand():
    np.testing.assert_allclose(
        gan_losses.g_loss("non_saturating", FAKE), [math.log(1 + math.exp(-0.5)), math.log(1 + math.exp(3))], rtol=1e-6
    )
    np.testing.assert_allclose(gan_losses.g_loss("hinge", FAKE), [-0.5, 3.0])
    np.testing.assert_allclose(gan_losses.g_loss("wasserstein", FAKE), [-0.5, 3.0])
    with pytest.raises(ValueError, match="gan.loss='minimax' is not one of"):
        gan_losses.g_loss("minimax", FAKE)


def test_gradient_penalty_by_hand():
    # a linear critic w.x has gradient w everywhere: (|(3, 4)| - 1)^2 = 16 whatever the interpolate
    linear = lambda x: x.reshape(x.shape[0], -1) @ jnp.array([3.0, 4.0])
    real, fake = jnp.array([[1.0, 0.0], [5.0, 5.0]]), jnp.array([[0.0, 0.0], [-1.0, 2.0]])
    np.testing.assert_allclose(gan_losses.gradient_penalty(linear, real, fake, jnp.array([0.3, 0.9])), [16.0, 16.0])
    # critic |x|^2 / 2 has gradient x: at eps = 0.5 between (1, 0) and (0, 0), x = (0.5, 0): (0.5 - 1)^2 = 0.25;
    # at eps = 0.25 between (4, 0) and (0, 0): x = (1, 0), penalty 0
    quad = lambda x: 0.5 * jnp.sum(x.reshape(x.shape[0], -1) ** 2, -1)
    got = gan_losses.gradient_penalty(
        quad, jnp.array([[1.0, 0.0], [4.0, 0.0]]), jnp.zeros((2, 2)), jnp.array([0.5, 0.25])
    )
    np.testing.assert_allclose(got, [0.25, 0.0], atol=1e-6)


def test_our_transposed_convolution_is_flax_conv_transpose():
    x = jax.random.normal(jax.random.key(0), (2, 7, 7, 3))
    ours = dcgan.ConvTranspose4x4Stride2(5)
    params = ours.init(jax.random.key(1), x)["params"]
    ref = nn.ConvTranspose(5, (4, 4), strides=(2, 2), padding="SAME").apply({"params": nn.meta.unbox(params)}, x)
    got = ours.apply({"params": params}, x)
    assert got.shape == (2, 14, 14, 5)
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_family_shapes_and_flops():
    cfg = dcgan.DCGANConfig(num_classes=10)
    params = nn.meta.unbox(dcgan.init(cfg, jax.random.key(0)))
    assert set(params) == {"generator", "discriminator"}
    z, y = jnp.zeros((3, cfg.z_dim)), jnp.arange(3)
    images = dcgan.Generator(cfg).apply({"params": params["generator"]}, z, y)
    assert images.shape == (3, 28, 28, 1) and float(jnp.abs(images).max()) <= 1.0
    assert dcgan.Discriminator(cfg).apply({"params": params["discriminator"]}, images, y).shape == (3,)
    assert dcgan.flops_per_token(cfg) > 2 * 28 * 28 * 16 * 32  # at least D's first convolution
    with pytest.raises(ValueError, match="not divisible by 2\\*\\*model.n_up"):
        dcgan.DCGANConfig(image_size=30)


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    config = run_config.load_config(str(REPO / "configs" / "gan" / "digits_tiny.py"))
    return Trainer(config, tmp_path_factory.mktemp("gan_unit"), write=False)


def _state(trainer):
    return trainer.init_state()


def test_each_update_changes_only_its_sub_model(trainer):
    state = _state(trainer)
    batch = {k: v[0] for k, v in trainer.batches(0, 1).items()}
    by_name = {u.name: u for u in trainer.updates}
    assert [u.name for u in trainer.updates] == ["discriminator", "generator", "generator_ema"]
    state = jax.jit(make_updates_step([by_name["generator"]]))(state, batch)[0]  # so the EMA has a gap to close
    for name, update in by_name.items():
        new = jax.jit(make_updates_step([update]))(state, batch)[0]
        for other in by_name:
            same = jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), new.params[other], state.params[other])
            assert all(jax.tree.leaves(same)) == (other != name), (name, other)


def test_ema_step_is_the_exponential_average(trainer):
    state = _state(trainer)
    batch = {k: v[0] for k, v in trainer.batches(0, 1).items()}
    new, metrics = jax.jit(make_updates_step(trainer.updates))(state, batch)
    d = min(trainer.config.gan.ema_decay, 1.0 / 10.0)  # step 0 of the ramp (1 + t) / (10 + t)
    expect = jax.tree.map(lambda e, g: d * e + (1 - d) * g, state.params["generator_ema"], new.params["generator"])
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), new.params["generator_ema"], expect
    )
    assert {"discriminator_loss", "generator_loss", "generator_ema_loss"} <= set(metrics)
    assert isinstance(new, TrainState) and int(new.step) == 1


def test_n_critic_repeats_the_discriminator(tmp_path):
    config = run_config.load_config(str(REPO / "configs" / "gan" / "digits_tiny.py"))
    config.gan.n_critic, config.gan.loss, config.gan.gp_weight = 3, "wasserstein", 10.0
    names = [u.name for u in Trainer(config, tmp_path, write=False).updates]
    assert names == ["discriminator"] * 3 + ["generator", "generator_ema"]


def test_bad_gan_configs_are_one_line_errors(tmp_path):
    config = run_config.load_config(str(REPO / "configs" / "gan" / "digits_tiny.py"))
    config.gan.loss = "minimax"
    with pytest.raises(ValueError, match=r"config.gan.loss='minimax' is not one of"):
        Trainer(config, tmp_path, write=False)
    config = run_config.load_config(str(REPO / "configs" / "gan" / "digits_tiny.py"))
    config.model.image_size = 16
    with pytest.raises(ValueError, match="has 8x8 images but model.image_size=16"):
        Trainer(config, tmp_path, write=False)
    assert not any(tmp_path.iterdir())  # nothing written on refusal


def test_frechet_distance_matches_its_formula():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 4))
    b = rng.normal(size=(400, 4)) @ rng.normal(size=(4, 4)) + 2.0
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    ref = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(s_a + s_b - 2 * scipy.linalg.sqrtm(s_a @ s_b).real)
    np.testing.assert_allclose(digit_eval.frechet_distance(a, b), ref, rtol=1e-6)
    assert abs(digit_eval.frechet_distance(a, a)) < 1e-8
    np.testing.assert_allclose(digit_eval.frechet_distance(a, a + 3.0), 4 * 9.0, rtol=1e-8)  # a shift only


def test_class_entropy_by_hand():
    uniform = np.eye(10)[np.arange(100) % 10]
    np.testing.assert_allclose(digit_eval.class_entropy(uniform), math.log(10))
    half = np.eye(10)[np.array([0, 0, 1, 1])]
    np.testing.assert_allclose(digit_eval.class_entropy(half), math.log(2))
    assert digit_eval.class_entropy(np.eye(10)[np.zeros(7, int)]) == 0.0


@pytest.mark.parametrize("loss,gp_weight", [("hinge", 0.0), ("wasserstein", 10.0)])
def test_other_losses_train_a_step(tmp_path, loss, gp_weight):
    config = run_config.load_config(str(REPO / "configs" / "gan" / "digits_tiny.py"))
    config.gan.loss, config.gan.gp_weight = loss, gp_weight
    tr = Trainer(config, tmp_path, write=False)
    state = tr.init_state()
    batch = {k: v[0] for k, v in tr.batches(0, 1).items()}
    new, metrics = jax.jit(make_updates_step(tr.updates))(state, batch)
    assert bool(metrics["finite"]) and float(metrics["discriminator_grad_norm"]) > 0
    # the penalty is part of D's loss: with it, D's loss differs from the plain critic's on the same step
    if gp_weight:
        config.gan.gp_weight = 0.0
        plain = Trainer(config, tmp_path, write=False)
        _, m0 = jax.jit(make_updates_step(plain.updates))(state, batch)
        assert float(metrics["discriminator_loss"]) > float(m0["discriminator_loss"])
    assert not all(
        jax.tree.leaves(jax.tree.map(jnp.array_equal, new.params["discriminator"], state.params["discriminator"]))
    )
