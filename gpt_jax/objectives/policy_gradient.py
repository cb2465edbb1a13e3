"""REINFORCE (Williams 1992) as SeqGAN (Yu et al. 2017) uses it: a surrogate whose gradient is the
score-function estimate of grad E[reward], with a baseline and Monte-Carlo rollout rewards per token.

The surrogate -(R - b) * log p(y) has gradient -(R - b) * grad log p(y); its expectation over y ~ p is
-grad E[R] as long as b does not depend on y (a moving average, or the mean of the *other* rows).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

BASELINES = ("none", "mean", "ema")


def reinforce_loss(logp_BxT, rewards_BxT, baseline_BxT, mask_BxT):
    """Summed surrogate loss over the masked (generated) tokens; rewards and baseline carry no gradient."""
    advantage_BxT = jax.lax.stop_gradient(rewards_BxT - baseline_BxT)
    return -(advantage_BxT * logp_BxT * mask_BxT).sum()


def leave_one_out_mean(rewards_BxT):
    """Each row's baseline = the mean reward of the other rows (independent of its own sample: unbiased)."""
    b = rewards_BxT.shape[0]
    return (rewards_BxT.sum(0, keepdims=True) - rewards_BxT) / jnp.maximum(b - 1, 1)


def checkpoints(prompt_len: int, length: int, every: int) -> tuple[int, ...]:
    """Positions t after which rollouts complete the sequence: every `every`-th generated token, and the
    last position (whose reward is the discriminator's on the whole sample, no rollout needed)."""
    picks = list(range(prompt_len - 1 + every, length - 1, every))
    return tuple(picks) + (length - 1,)


def token_rewards(q_BxC, points: tuple[int, ...], length: int):
    """[B, L]: a token at position s gets the rollout value Q at the first checkpoint >= s (SeqGAN's
    Q(y_1..t) with t the checkpoint); positions before the first generated token get 0 (masked anyway)."""
    idx_L = jnp.searchsorted(jnp.asarray(points), jnp.arange(length), side="left")
    idx_L = jnp.minimum(idx_L, len(points) - 1)
    return q_BxC[:, idx_L]
