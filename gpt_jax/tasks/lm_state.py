"""Language-model pretraining state and steps outside the trainer: for tests, benchmarks, imports."""

from __future__ import annotations

import flax.linen as nn
import optax

from gpt_jax import sharding as shd
from gpt_jax.models import gpt
from gpt_jax.models.base import ModelFamily
from gpt_jax.objectives.loss import LossFn, causal_lm_loss, lm_loss, lm_metrics
from gpt_jax.train import TrainState, create_state, make_eval, make_step, task_state_shardings


def lm_init(cfg, family: ModelFamily = gpt.FAMILY):
    """rng -> (trainable params, frozen {}) of a model trained from scratch."""
    return lambda rng: (nn.meta.unbox(family.init(cfg, rng)), {})


def state_shardings(cfg, tx, mesh, rules=shd.DEFAULT_RULES, family: ModelFamily = gpt.FAMILY):
    """(abstract TrainState, matching NamedSharding tree) of LM pretraining, without allocating anything."""
    return task_state_shardings(lm_init(cfg, family), family.abstract_params(cfg), tx, mesh, rules)


def create_train_state(cfg, tx, seed: int, shardings, family: ModelFamily = gpt.FAMILY) -> TrainState:
    """LM pretraining state: params and optimizer state initialised into their shards."""
    return create_state(lm_init(cfg, family), tx, seed, shardings)


def make_train_step(
    cfg,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    *,
    grad_accum: int = 1,
    loss_fn: LossFn = causal_lm_loss,
):
    """The pretraining step: `make_step` over `lm_loss(cfg, loss_fn)`."""
    return make_step(lm_loss(cfg, loss_fn), tx, schedule, grad_accum=grad_accum)


def make_eval_step(cfg, loss_fn: LossFn = causal_lm_loss):
    """Mean LM loss over eval batches stacked as [N, B, L]."""
    step = make_eval(lm_metrics(cfg, loss_fn))
    return lambda params, batches: step(params, {}, batches)["val_loss"]
