"""GAN losses on discriminator logits, per example (callers sum and count them).

non_saturating (Goodfellow et al. 2014, the generator maximises log D(G(z))), hinge (Lim & Ye 2017;
Miyato et al. 2018) and wasserstein, meant with `gradient_penalty` (WGAN-GP, Gulrajani et al. 2017).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

LOSSES = ("non_saturating", "hinge", "wasserstein")


def d_loss(kind: str, real_B: jax.Array, fake_B: jax.Array) -> jax.Array:
    """The discriminator's loss per example pair: real logits should rise, fake ones fall."""
    if kind == "non_saturating":  # -log sigmoid(real) - log(1 - sigmoid(fake))
        return jax.nn.softplus(-real_B) + jax.nn.softplus(fake_B)
    if kind == "hinge":
        return jax.nn.relu(1.0 - real_B) + jax.nn.relu(1.0 + fake_B)
    if kind == "wasserstein":
        return fake_B - real_B
    raise ValueError(f"gan.loss={kind!r} is not one of {LOSSES}")


def g_loss(kind: str, fake_B: jax.Array) -> jax.Array:
    """The generator's loss per example on the discriminator's logits of its samples."""
    if kind == "non_saturating":  # -log sigmoid(fake): strong gradients while D rejects the samples
        return jax.nn.softplus(-fake_B)
    if kind in ("hinge", "wasserstein"):
        return -fake_B
    raise ValueError(f"gan.loss={kind!r} is not one of {LOSSES}")


def gradient_penalty(
    critic: Callable[[jax.Array], jax.Array], real_BxS: jax.Array, fake_BxS: jax.Array, eps_B: jax.Array
) -> jax.Array:
    """(||d critic / d x at x = eps * real + (1 - eps) * fake||_2 - 1)^2 per example.

    `critic` maps a batch to one logit per example; examples are independent, so the gradient of the
    summed logits is each example's own gradient."""
    eps = eps_B.reshape((-1,) + (1,) * (real_BxS.ndim - 1))
    mixed = eps * real_BxS + (1.0 - eps) * fake_BxS
    grads = jax.grad(lambda x: critic(x).sum())(mixed)
    norms_B = jnp.sqrt(jnp.sum(grads.reshape(grads.shape[0], -1) ** 2, axis=-1) + 1e-12)
    return (norms_B - 1.0) ** 2
