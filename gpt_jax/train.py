"""Train state and the pure step functions: `train_step(state, batch) -> (state, metrics)`.

The loop that drives them (data, logging, checkpoints) is `gpt_jax.trainer`.
"""

from __future__ import annotations

from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from gpt_jax import sharding as shd
from gpt_jax.config import ModelConfig
from gpt_jax.model import GPT, init_params

Batch = dict[str, jax.Array]  # inputs_BxL, targets_BxL, optional weights_BxL
LossFn = Callable[..., tuple[jax.Array, jax.Array]]


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar: optimizer steps taken
    params: Any
    opt_state: Any
    rng: jax.Array  # typed PRNG key; dropout keys are fold_in(rng, step)


def causal_lm_loss(logits_BxLxV, batch: Batch) -> tuple[jax.Array, jax.Array]:
    """Summed next-token cross entropy (float32) and the number of counted tokens."""
    losses_BxL = optax.softmax_cross_entropy_with_integer_labels(logits_BxLxV.astype(jnp.float32), batch["targets"])
    weights_BxL = batch.get("weights")
    if weights_BxL is None:
        return losses_BxL.sum(), jnp.asarray(losses_BxL.size, jnp.float32)
    weights_BxL = weights_BxL.astype(jnp.float32)
    return (losses_BxL * weights_BxL).sum(), weights_BxL.sum()


def make_train_step(
    cfg: ModelConfig,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    *,
    grad_accum: int = 1,
    loss_fn: LossFn = causal_lm_loss,
):
    """Pure train step; with grad_accum > 1 the batch is split into micro-batches scanned in order."""
    model = GPT(cfg)

    def summed_loss(params, batch, rng):
        logits = model.apply({"params": params}, batch["inputs"], deterministic=False, rngs={"dropout": rng})
        return loss_fn(logits, batch)

    grad_fn = jax.value_and_grad(summed_loss, has_aux=True)

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
        rng = jax.random.fold_in(state.rng, state.step)
        if grad_accum == 1:
            (loss_sum, count), grads = grad_fn(state.params, batch, rng)
        else:
            micro = jax.tree.map(lambda x: x.reshape(grad_accum, x.shape[0] // grad_accum, *x.shape[1:]), batch)

            def accumulate(carry, xs):
                i, mb = xs
                (l, c), g = grad_fn(state.params, mb, jax.random.fold_in(rng, i))
                return jax.tree.map(jnp.add, carry, (l, c, g)), None

            zeros = (jnp.zeros(()), jnp.zeros(()), jax.tree.map(jnp.zeros_like, state.params))
            (loss_sum, count, grads), _ = jax.lax.scan(accumulate, zeros, (jnp.arange(grad_accum), micro))
        grads = jax.tree.map(lambda g: g / count, grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"train_loss": loss_sum / count, "grad_norm": optax.tree.norm(grads), "lr": schedule(state.step)}
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return train_step


def scan_steps(train_step):
    """K train steps in one compiled program: batches carry a leading steps axis [K, B, L].

    On CPU the per-call dispatch and host round trip cost as much as a small model's step.
    """

    def multi_step(state: TrainState, batches: Batch):
        return jax.lax.scan(train_step, state, batches)

    return multi_step


def make_eval_step(cfg: ModelConfig, loss_fn: LossFn = causal_lm_loss):
    """Mean loss over eval batches stacked as [N, B, L]."""
    model = GPT(cfg)

    def eval_step(params, batches: Batch) -> jax.Array:
        def one(carry, batch):
            logits = model.apply({"params": params}, batch["inputs"])
            l, c = loss_fn(logits, batch)
            return (carry[0] + l, carry[1] + c), None

        (loss_sum, count), _ = jax.lax.scan(one, (jnp.zeros(()), jnp.zeros(())), batches)
        return loss_sum / count

    return eval_step


def state_shardings(cfg: ModelConfig, tx: optax.GradientTransformation, mesh, rules=shd.DEFAULT_RULES):
    """(abstract TrainState, matching NamedSharding tree), without allocating anything."""
    boxed = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))
    param_sharding = shd.logical_sharding(boxed, mesh, rules)
    params = nn.meta.unbox(boxed)
    opt_state = jax.eval_shape(tx.init, params)
    # Optimizer slots that mirror params (Adam mu/nu, ...) take the params' sharding; counters replicate.
    opt_sharding = optax.tree_map_params(
        tx, lambda _, s: s, opt_state, param_sharding, transform_non_params=lambda _: shd.replicated(mesh)
    )
    abstract = TrainState(
        step=jax.ShapeDtypeStruct((), jnp.int32),
        params=params,
        opt_state=opt_state,
        rng=jax.eval_shape(lambda: jax.random.key(0)),
    )
    shardings = TrainState(
        step=shd.replicated(mesh), params=param_sharding, opt_state=opt_sharding, rng=shd.replicated(mesh)
    )
    return abstract, shardings


def create_train_state(cfg: ModelConfig, tx: optax.GradientTransformation, seed: int, shardings) -> TrainState:
    """Initialise params and optimizer state directly into their shards (never whole on one device)."""

    def init(rng):
        init_rng, train_rng = jax.random.split(rng)
        params = nn.meta.unbox(init_params(cfg, init_rng))
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), rng=train_rng)

    return jax.jit(init, out_shardings=shardings)(jax.random.key(seed))
