"""Issue 19, the text GAN's estimators and samplers (no trainer): REINFORCE is unbiased where the exact
gradient is known, straight-through Gumbel is hard forward / soft backward, the KV-cache sweep samples what
a full recompute would, and self-BLEU counts n-grams as BLEU does."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpt_jax.analysis import text_gan_metrics
from gpt_jax.config import ModelConfig
from gpt_jax.generation import scan_sample
from gpt_jax.model import GPT, init_params
from gpt_jax.objectives import policy_gradient as pg

THETA = jnp.array([0.5, -1.0, 1.5, 0.0, -0.3])
REWARD = jnp.array([1.0, 3.0, -2.0, 0.5, 2.0])


def _exact_gradient():
    p = jax.nn.softmax(THETA)
    return p * (REWARD - p @ REWARD)  # d/dtheta sum_i p_i r_i for p = softmax(theta)


def _mean_estimate(baseline_fn, batches=40_000, batch=4):
    """The REINFORCE estimate of grad E[r] (minus the surrogate's gradient), averaged over many batches."""
    a_MxB = jax.random.categorical(jax.random.key(0), THETA, shape=(batches, batch))

    def estimate(a_B):
        def loss(theta):
            logp_Bx1 = jax.nn.log_softmax(theta)[a_B][:, None]
            r_Bx1 = REWARD[a_B][:, None]
            return pg.reinforce_loss(logp_Bx1, r_Bx1, baseline_fn(r_Bx1), jnp.ones_like(r_Bx1)) / batch

        return -jax.grad(loss)(THETA)

    return jax.jit(jax.vmap(estimate))(a_MxB).mean(0)


def test_reinforce_is_unbiased_and_a_biased_baseline_is_caught():
    exact = _exact_gradient()
    assert float(jnp.abs(exact).min()) > 0.05  # every coordinate is big enough for a bias to show
    tol = 0.02  # ~6 standard errors of a 160,000-sample mean here
    for baseline in (jnp.zeros_like, pg.leave_one_out_mean):
        np.testing.assert_allclose(_mean_estimate(baseline), exact, atol=tol)
    # A baseline that includes the row's own reward is not independent of its sample: with 4 rows the
    # estimate shrinks by 1/4, which this test must see.
    own_mean = lambda r_BxT: jnp.broadcast_to(r_BxT.mean(0, keepdims=True), r_BxT.shape)
    biased = _mean_estimate(own_mean)
    np.testing.assert_allclose(biased, 0.75 * exact, atol=tol)
    assert float(jnp.abs(biased - exact).max()) > 3 * tol


def test_leave_one_out_mean_by_hand():
    r = jnp.array([[1.0, 0.0], [2.0, 4.0], [6.0, 8.0]])
    np.testing.assert_allclose(pg.leave_one_out_mean(r), [[4.0, 6.0], [3.5, 4.0], [1.5, 2.0]])


def test_rollout_checkpoints_and_token_rewards():
    # prompt 2, length 10, every 3: rollouts after positions 4 and 7, the last position (9) is the full sample
    points = pg.checkpoints(2, 10, 3)
    assert points == (4, 7, 9)
    q = jnp.array([[0.1, 0.2, 0.3]])
    # tokens 2..4 take Q(4), 5..7 Q(7), 8..9 the final reward (positions 0, 1 are the prompt, masked)
    np.testing.assert_allclose(pg.token_rewards(q, points, 10)[0], [0.1] * 5 + [0.2] * 3 + [0.3] * 2)
    assert pg.checkpoints(2, 10, 100) == (9,)


def test_straight_through_is_hard_forward_soft_backward():
    logits = jax.random.normal(jax.random.key(1), (3, 7))
    w = jax.random.normal(jax.random.key(2), (3, 7))
    rng, tau = jax.random.key(3), 0.7
    y, ids = scan_sample.straight_through(logits, rng, tau)
    g = jax.random.gumbel(rng, logits.shape)
    np.testing.assert_array_equal(ids, jnp.argmax(logits + g, -1))  # a Gumbel-max sample
    np.testing.assert_array_equal(y, jax.nn.one_hot(ids, 7))  # exactly one-hot, bit for bit
    got = jax.grad(lambda x: (scan_sample.straight_through(x, rng, tau)[0] * w).sum())(logits)
    soft = jax.grad(lambda x: (jax.nn.softmax((x + g) / tau) * w).sum())(logits)
    np.testing.assert_allclose(got, soft, rtol=1e-5, atol=1e-7)
    assert float(jnp.abs(got).max()) > 1e-3


@pytest.fixture(scope="module")
def tiny_gpt():
    cfg = ModelConfig(vocab_size=11, block_size=10, n_layer=1, n_head=2, n_embd=16)
    return cfg, nn.meta.unbox(init_params(cfg, jax.random.key(0)))


def test_fill_keeps_prompts_and_matches_full_recompute(tiny_gpt):
    cfg, params = tiny_gpt
    tokens = jax.random.randint(jax.random.key(4), (3, 10), 0, 11)
    keep = jnp.array([1, 4, 9])
    fill = jax.jit(scan_sample.fill, static_argnums=(0, 5))
    got = np.asarray(fill(cfg, params, tokens, keep, jax.random.key(5), 1e-6))
    # greedy (temperature -> 0): a full causal recompute of the result predicts each sampled token from
    # the tokens before it (position i - 1's logits see only got[:i])
    greedy = np.asarray(jnp.argmax(GPT(cfg).apply({"params": params}, jnp.asarray(got)), -1))
    for row in range(3):
        k = int(keep[row])
        np.testing.assert_array_equal(got[row, : k + 1], np.asarray(tokens[row, : k + 1]))
        np.testing.assert_array_equal(got[row, k + 1 :], greedy[row, k:-1])
    assert (got[0, 2:] != np.asarray(tokens[0, 2:])).any()  # it did resample


def test_gumbel_fill_rows_are_one_hot_and_carry_gradients(tiny_gpt):
    cfg, params = tiny_gpt
    tokens = jax.random.randint(jax.random.key(6), (2, 10), 0, 11)
    rows, ids = jax.jit(scan_sample.gumbel_fill, static_argnums=(0, 3))(cfg, params, tokens, 3, jax.random.key(7), 1.0)
    np.testing.assert_array_equal(rows, jax.nn.one_hot(ids, 11))
    np.testing.assert_array_equal(ids[:, :3], tokens[:, :3])
    w = jax.random.normal(jax.random.key(8), rows.shape)
    grad_fn = jax.jit(
        jax.grad(lambda p: (scan_sample.gumbel_fill(cfg, p, tokens, 3, jax.random.key(7), 1.0)[0] * w).sum())
    )
    grads = grad_fn(params)
    norms = [float(jnp.abs(x).max()) for x in jax.tree.leaves(grads)]
    assert all(np.isfinite(norms)) and max(norms) > 0


def test_self_bleu_by_hand():
    # identical samples: every n-gram of each is in the others -> 1; disjoint words -> 0
    assert text_gan_metrics.self_bleu(["a b c d e"] * 3) == pytest.approx(1.0)
    assert text_gan_metrics.self_bleu(["a b c d", "e f g h", "i j k l"]) == pytest.approx(0.0, abs=1e-9)
    # hypothesis "a b c d" against reference "a b c x": p1 = 3/4, p2 = 2/3, p3 = 1/2, p4 = 0/1 (smoothed: 0.1/1)
    expect = (0.75 * (2 / 3) * 0.5 * 0.1) ** 0.25
    assert text_gan_metrics.bleu(["a", "b", "c", "d"], [["a", "b", "c", "x"]]) == pytest.approx(expect)
