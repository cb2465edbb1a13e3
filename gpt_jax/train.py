"""Train state and the pure step functions: `train_step(state, batch) -> (state, metrics)`.

Generic over what is trained: a step is a sequence of `Update`s, each a loss differentiated with respect
to one named sub-model (or the whole trainable tree) and applied by its own optimizer. One model is one
update; a generator and a discriminator are two, alternating inside the step; a frozen teacher beside a
student lives in `frozen`. Losses come from gpt_jax.tasks / gpt_jax.objectives; the loop that drives the
step (data, logging, checkpoints) is gpt_jax.trainer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from gpt_jax import sharding as shd

Batch = dict[str, jax.Array]  # inputs_BxL, targets_BxL, optional weights_BxL (see gpt_jax.masks for more)
# (params, frozen, batch, rng | None) -> (summed loss, count); rng None = eval mode (no dropout)
TaskLossFn = Callable[[Any, Any, Batch, Any], tuple[jax.Array, jax.Array]]
# (params, frozen, batch) -> {metric: (sum, count)}; eval means are sum / count over all batches
MetricsFn = Callable[[Any, Any, Batch], dict[str, tuple[jax.Array, jax.Array]]]


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar: optimizer steps taken
    params: Any  # the trainable tree (a dict of named sub-models when updates are named)
    opt_state: Any  # one optimizer state, or {name: state} for named updates
    rng: jax.Array  # typed PRNG key; dropout keys are fold_in(rng, step)
    frozen: Any = flax.struct.field(default_factory=dict)  # carried through steps untouched (PEFT bases, teachers)


@dataclasses.dataclass(frozen=True)
class Update:
    """`loss` differentiated w.r.t. `params[name]` (the whole trainable tree when `name` is None) and
    applied by `tx`. The loss always sees every sub-model: the latest values, so updates alternate."""

    loss: TaskLossFn
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    name: str | None = None


@dataclasses.dataclass(frozen=True)
class Optimizers:
    """The optimizer state of a list of updates: `init(params)` like an optax transformation."""

    updates: tuple[Update, ...]

    def init(self, params):
        if len(self.updates) == 1 and self.updates[0].name is None:
            return self.updates[0].tx.init(params)
        named = {u.name: u.tx for u in self.updates}  # an update repeated (n_critic) shares its state
        if None in named:
            raise ValueError("several updates in one step must each name the sub-model they train")
        return {name: tx.init(params[name]) for name, tx in named.items()}


def _loss_and_grads(loss: TaskLossFn, params, frozen, batch: Batch, rng, grad_accum: int):
    """(summed loss, count, mean gradient); with grad_accum > 1 the batch is split into micro-batches
    scanned in order."""
    grad_fn = jax.value_and_grad(loss, has_aux=True)
    if grad_accum == 1:
        (loss_sum, count), grads = grad_fn(params, frozen, batch, rng)
    else:
        micro = jax.tree.map(lambda x: x.reshape(grad_accum, x.shape[0] // grad_accum, *x.shape[1:]), batch)

        def accumulate(carry, xs):
            i, mb = xs
            (l, c), g = grad_fn(params, frozen, mb, jax.random.fold_in(rng, i))
            return jax.tree.map(jnp.add, carry, (l, c, g)), None

        zeros = (jnp.zeros(()), jnp.zeros(()), jax.tree.map(jnp.zeros_like, params))
        (loss_sum, count, grads), _ = jax.lax.scan(accumulate, zeros, (jnp.arange(grad_accum), micro))
    return loss_sum, count, jax.tree.map(lambda g: g / count, grads)


def make_updates_step(updates: Sequence[Update], *, grad_accum: int = 1, skip_nonfinite: bool = False):
    """Pure train step applying `updates` in order. Metrics: `train_loss`, `grad_norm`, `lr` for a single
    unnamed update; `<name>_loss`, `<name>_grad_norm`, `<name>_lr` for named ones; always `finite`.

    metrics["finite"] is 1 when every loss and gradient norm is finite. With `skip_nonfinite` a step that
    is not finite leaves params and optimizer state as they were (the step count still advances, so the
    data moves on); otherwise the host stops the run (gpt_jax.nonfinite)."""
    updates = tuple(updates)
    single = len(updates) == 1 and updates[0].name is None

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
        rng = jax.random.fold_in(state.rng, state.step)
        params, opt_state, metrics, finite = state.params, state.opt_state, {}, jnp.asarray(True)
        for i, u in enumerate(updates):
            u_rng = rng if i == 0 else jax.random.fold_in(rng, 1_000_003 + i)
            if single:
                loss, sub, sub_opt = u.loss, params, opt_state
            else:
                loss = lambda sub_p, fr, b, r, u=u, p=params: u.loss({**p, u.name: sub_p}, fr, b, r)
                sub, sub_opt = params[u.name], opt_state[u.name]
            loss_sum, count, grads = _loss_and_grads(loss, sub, state.frozen, batch, u_rng, grad_accum)
            step_updates, sub_opt = u.tx.update(grads, sub_opt, sub)
            sub = optax.apply_updates(sub, step_updates)
            train_loss, grad_norm = loss_sum / count, optax.tree.norm(grads)
            finite = finite & jnp.isfinite(train_loss) & jnp.isfinite(grad_norm)
            prefix = "train_" if single else f"{u.name}_"
            metrics.update(
                {
                    f"{prefix}loss": train_loss,
                    f"{'' if single else prefix}grad_norm": grad_norm,
                    f"{'' if single else prefix}lr": u.schedule(state.step),
                }
            )
            if single:
                params, opt_state = sub, sub_opt
            else:
                params, opt_state = {**params, u.name: sub}, {**opt_state, u.name: sub_opt}
        if skip_nonfinite:
            keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
            params, opt_state = keep(params, state.params), keep(opt_state, state.opt_state)
        metrics["finite"] = finite
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return train_step


def make_step(
    loss: TaskLossFn,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    *,
    grad_accum: int = 1,
    skip_nonfinite: bool = False,
):
    """The step of one model: a single update of the whole trainable tree (see make_updates_step)."""
    return make_updates_step([Update(loss, tx, schedule)], grad_accum=grad_accum, skip_nonfinite=skip_nonfinite)


def scan_steps(train_step):
    """K train steps in one compiled program: batches carry a leading steps axis [K, B, L].

    On CPU the per-call dispatch and host round trip cost as much as a small model's step. One step
    (K = 1) runs outside any loop: XLA:CPU runs convolutions inside a loop ~10x slower (a DCGAN step of
    configs/gan/mnist_dcgan.py: 0.61 vs 0.06 CPU s), so convolutional models use steps_per_call=1.
    """

    def multi_step(state: TrainState, batches: Batch):
        if jax.tree.leaves(batches)[0].shape[0] == 1:
            state, metrics = train_step(state, jax.tree.map(lambda x: x[0], batches))
            return state, jax.tree.map(lambda m: m[None], metrics)
        return jax.lax.scan(train_step, state, batches)

    return multi_step


def make_eval(metrics_fn: MetricsFn):
    """{metric: mean over eval batches stacked as [N, B, ...]} (each mean = total sum / total count)."""

    def eval_step(params, frozen, batches: Batch) -> dict[str, jax.Array]:
        def one(carry, batch):
            got = metrics_fn(params, frozen, batch)
            return jax.tree.map(
                jnp.add,
                carry,
                {k: (jnp.asarray(s, jnp.float32), jnp.asarray(c, jnp.float32)) for k, (s, c) in got.items()},
            ), None

        first = jax.tree.map(lambda x: x[0], batches)
        shapes = jax.eval_shape(lambda: metrics_fn(params, frozen, first))
        zeros = {k: (jnp.zeros(()), jnp.zeros(())) for k in shapes}
        totals, _ = jax.lax.scan(one, zeros, batches)
        return {k: s / c for k, (s, c) in totals.items()}

    return eval_step


def param_shardings(tree, boxed_reference, mesh, rules=shd.DEFAULT_RULES):
    """NamedShardings for any tree holding a model's params: a leaf whose path ends with a reference param's
    path (and has its shape) takes that param's logical sharding; anything else (heads, adapters) replicates."""
    by_path = {}
    gpt_shardings = shd.logical_sharding(boxed_reference, mesh, rules)
    for path, sharding in jax.tree_util.tree_leaves_with_path(gpt_shardings):
        by_path[_names(path)] = sharding
    shapes = {
        k: v.shape
        for k, v in ((_names(p), l) for p, l in jax.tree_util.tree_leaves_with_path(nn.meta.unbox(boxed_reference)))
    }

    def one(path, leaf):
        names = _names(path)
        for start in range(len(names)):
            key = names[start:]
            if key in by_path and shapes[key] == leaf.shape:
                return by_path[key]
        return shd.replicated(mesh)

    return jax.tree_util.tree_map_with_path(one, tree)


def _names(path) -> tuple[str, ...]:
    return tuple(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def _dict_path(path) -> tuple:
    """The trailing run of dict keys of a key path: a param's name inside any optimizer state."""
    keys = []
    for k in reversed(path):
        if not isinstance(k, jax.tree_util.DictKey):
            break
        keys.append(k.key)
    return tuple(reversed(keys))


def opt_state_shardings(opt_state, params, param_sharding, replicated):
    """Optimizer slots that mirror a param (Adam mu/nu, momentum, ...) take that param's sharding; counters
    and anything else replicate. Matched by name and shape, so it works for every optimizer, including
    ones whose init cannot take optax's placeholder tree (`optax.tree_map_params`): Muon's per-param
    labels, per-key PEFT optimizers."""
    named = {}
    for (path, leaf), sharding in zip(
        jax.tree_util.tree_flatten_with_path(params)[0], jax.tree.leaves(param_sharding), strict=True
    ):
        named[_dict_path(path)] = (leaf.shape, sharding)

    def pick(path, leaf):
        keys = _dict_path(path)
        for i in range(len(keys)):  # optax may wrap a params-shaped dict in dicts of its own (labels)
            shape, sharding = named.get(keys[i:], (None, None))
            if sharding is not None and shape == leaf.shape:
                return sharding
        return replicated

    return jax.tree_util.tree_map_with_path(pick, opt_state)


def task_state_shardings(init_fn, boxed_reference, tx, mesh, rules=shd.DEFAULT_RULES):
    """(abstract TrainState, NamedSharding tree) for `init_fn(rng) -> (trainable, frozen)`, allocating nothing.

    `boxed_reference`: the model family's abstract boxed params (`jax.eval_shape(family.init, ...)`), whose
    logical axes give every leaf of the state that carries one of its params (by path and shape) its
    sharding; `tx` is anything with `init(params)` (an optax transformation, `Optimizers`)."""
    params, frozen = jax.eval_shape(init_fn, jax.random.key(0))
    param_sharding = param_shardings(params, boxed_reference, mesh, rules)
    frozen_sharding = param_shardings(frozen, boxed_reference, mesh, rules)
    opt_state = jax.eval_shape(tx.init, params)
    opt_sharding = opt_state_shardings(opt_state, params, param_sharding, shd.replicated(mesh))
    abstract = TrainState(
        step=jax.ShapeDtypeStruct((), jnp.int32),
        params=params,
        opt_state=opt_state,
        rng=jax.eval_shape(lambda: jax.random.key(0)),
        frozen=frozen,
    )
    shardings = TrainState(
        step=shd.replicated(mesh),
        params=param_sharding,
        opt_state=opt_sharding,
        rng=shd.replicated(mesh),
        frozen=frozen_sharding,
    )
    return abstract, shardings


def create_state(init_fn, tx, seed: int, shardings, *args) -> TrainState:
    """Initialise directly into the shards (never whole on one device). `init_fn(rng, *args) -> (trainable,
    frozen)`; `args` (e.g. pretrained weights) go in as jit arguments, not as compiled-in constants."""

    def init(rng, *args):
        init_rng, train_rng = jax.random.split(rng)
        params, frozen = init_fn(init_rng, *args)
        return TrainState(
            step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), rng=train_rng, frozen=frozen
        )

    return jax.jit(init, out_shardings=shardings)(jax.random.key(seed), *args)
