"""The loss every pretraining objective trains with: weighted next-token cross entropy of the model's
logits over `inputs` (with the batch's positions and attention mask, gpt_jax.masks) against `targets`."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from gpt_jax import masks
from gpt_jax.models import gpt
from gpt_jax.models.base import ModelFamily
from gpt_jax.train import Batch, MetricsFn, TaskLossFn

LossFn = Callable[..., tuple[jax.Array, jax.Array]]  # (logits, batch) -> (summed loss, count)


def causal_lm_loss(logits_BxLxV, batch: Batch) -> tuple[jax.Array, jax.Array]:
    """Summed next-token cross entropy (float32) and the number of counted tokens."""
    losses_BxL = optax.softmax_cross_entropy_with_integer_labels(logits_BxLxV.astype(jnp.float32), batch["targets"])
    weights_BxL = batch.get("weights")
    if weights_BxL is None:
        return losses_BxL.sum(), jnp.asarray(losses_BxL.size, jnp.float32)
    weights_BxL = weights_BxL.astype(jnp.float32)
    return (losses_BxL * weights_BxL).sum(), weights_BxL.sum()


class WeightedCrossEntropy:
    """The loss an objective trains with: `loss(logits_BxLxV, batch) -> (summed loss, count)`; every
    objective here predicts `targets` under `weights`, whatever it did to the rows."""

    def loss(self, logits_BxLxV, batch: Batch) -> tuple[jax.Array, jax.Array]:
        return causal_lm_loss(logits_BxLxV, batch)


def lm_loss(cfg, loss_fn: LossFn = causal_lm_loss, family: ModelFamily = gpt.FAMILY) -> TaskLossFn:
    """The family's model over `inputs` with the batch's mask/positions, `loss_fn` on its logits."""
    model = family.module(cfg)

    def loss(params, frozen, batch, rng):
        del frozen
        length = batch["inputs"].shape[-1]
        mask = masks.attention_mask(batch, length) if masks.needs_mask(batch) else None
        logits = model.apply(
            {"params": params},
            batch["inputs"],
            positions_BxL=batch.get("positions"),
            mask_BxLxS=mask,
            deterministic=rng is None,
            rngs=None if rng is None else {"dropout": rng},
        )
        return loss_fn(logits, batch)

    return loss


def lm_metrics(cfg, loss_fn: LossFn = causal_lm_loss, family: ModelFamily = gpt.FAMILY) -> MetricsFn:
    loss = lm_loss(cfg, loss_fn, family)
    return lambda params, frozen, batch: {"val_loss": loss(params, frozen, batch, None)}
