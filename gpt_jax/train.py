"""Train state and the pure step functions: `train_step(state, batch) -> (state, metrics)`.

The step is generic over a loss `loss_fn(params, frozen, batch, rng) -> (summed loss, count)`: what is
trained (LM pretraining, a classifier, SFT, a PEFT method) lives in gpt_jax.tasks, never here.
The loop that drives them (data, logging, checkpoints) is `gpt_jax.trainer`.
"""

from __future__ import annotations

from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from gpt_jax import masks
from gpt_jax import sharding as shd
from gpt_jax.config import ModelConfig
from gpt_jax.model import GPT, init_params

Batch = dict[str, jax.Array]  # inputs_BxL, targets_BxL, optional weights_BxL (see gpt_jax.masks for more)
LossFn = Callable[..., tuple[jax.Array, jax.Array]]
# (params, frozen, batch, rng | None) -> (summed loss, count); rng None = eval mode (no dropout)
TaskLossFn = Callable[[Any, Any, Batch, Any], tuple[jax.Array, jax.Array]]
# (params, frozen, batch) -> {metric: (sum, count)}; eval means are sum / count over all batches
MetricsFn = Callable[[Any, Any, Batch], dict[str, tuple[jax.Array, jax.Array]]]


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar: optimizer steps taken
    params: Any  # the trainable tree: the optimizer sees only this
    opt_state: Any
    rng: jax.Array  # typed PRNG key; dropout keys are fold_in(rng, step)
    frozen: Any = flax.struct.field(default_factory=dict)  # carried through steps untouched (PEFT bases)


def causal_lm_loss(logits_BxLxV, batch: Batch) -> tuple[jax.Array, jax.Array]:
    """Summed next-token cross entropy (float32) and the number of counted tokens."""
    losses_BxL = optax.softmax_cross_entropy_with_integer_labels(logits_BxLxV.astype(jnp.float32), batch["targets"])
    weights_BxL = batch.get("weights")
    if weights_BxL is None:
        return losses_BxL.sum(), jnp.asarray(losses_BxL.size, jnp.float32)
    weights_BxL = weights_BxL.astype(jnp.float32)
    return (losses_BxL * weights_BxL).sum(), weights_BxL.sum()


def lm_loss(cfg: ModelConfig, loss_fn: LossFn = causal_lm_loss) -> TaskLossFn:
    """Pretraining loss: GPT over `inputs` with the batch's mask/positions (gpt_jax.masks), `loss_fn` on logits."""
    model = GPT(cfg)

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


def make_step(loss: TaskLossFn, tx: optax.GradientTransformation, schedule: optax.Schedule, *, grad_accum: int = 1):
    """Pure train step over `loss`; with grad_accum > 1 the batch is split into micro-batches scanned in order."""
    grad_fn = jax.value_and_grad(loss, has_aux=True)

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
        rng = jax.random.fold_in(state.rng, state.step)
        if grad_accum == 1:
            (loss_sum, count), grads = grad_fn(state.params, state.frozen, batch, rng)
        else:
            micro = jax.tree.map(lambda x: x.reshape(grad_accum, x.shape[0] // grad_accum, *x.shape[1:]), batch)

            def accumulate(carry, xs):
                i, mb = xs
                (l, c), g = grad_fn(state.params, state.frozen, mb, jax.random.fold_in(rng, i))
                return jax.tree.map(jnp.add, carry, (l, c, g)), None

            zeros = (jnp.zeros(()), jnp.zeros(()), jax.tree.map(jnp.zeros_like, state.params))
            (loss_sum, count, grads), _ = jax.lax.scan(accumulate, zeros, (jnp.arange(grad_accum), micro))
        grads = jax.tree.map(lambda g: g / count, grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"train_loss": loss_sum / count, "grad_norm": optax.tree.norm(grads), "lr": schedule(state.step)}
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return train_step


def make_train_step(
    cfg: ModelConfig,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    *,
    grad_accum: int = 1,
    loss_fn: LossFn = causal_lm_loss,
):
    """The pretraining step: `make_step` over `lm_loss(cfg, loss_fn)`."""
    return make_step(lm_loss(cfg, loss_fn), tx, schedule, grad_accum=grad_accum)


def scan_steps(train_step):
    """K train steps in one compiled program: batches carry a leading steps axis [K, B, L].

    On CPU the per-call dispatch and host round trip cost as much as a small model's step.
    """

    def multi_step(state: TrainState, batches: Batch):
        return jax.lax.scan(train_step, state, batches)

    return multi_step


def make_eval(metrics_fn: MetricsFn):
    """{metric: mean over eval batches stacked as [N, B, ...]} (each mean = total sum / total count)."""

    def eval_step(params, frozen, batches: Batch) -> dict[str, jax.Array]:
        def one(carry, batch):
            got = metrics_fn(params, frozen, batch)
            return jax.tree.map(jnp.add, carry, {k: (jnp.asarray(s, jnp.float32), jnp.asarray(c, jnp.float32)) for k, (s, c) in got.items()}), None

        first = jax.tree.map(lambda x: x[0], batches)
        shapes = jax.eval_shape(lambda: metrics_fn(params, frozen, first))
        zeros = {k: (jnp.zeros(()), jnp.zeros(())) for k in shapes}
        totals, _ = jax.lax.scan(one, zeros, batches)
        return {k: s / c for k, (s, c) in totals.items()}

    return eval_step


def lm_metrics(cfg: ModelConfig, loss_fn: LossFn = causal_lm_loss) -> MetricsFn:
    loss = lm_loss(cfg, loss_fn)
    return lambda params, frozen, batch: {"val_loss": loss(params, frozen, batch, None)}


def make_eval_step(cfg: ModelConfig, loss_fn: LossFn = causal_lm_loss):
    """Mean LM loss over eval batches stacked as [N, B, L]."""
    step = make_eval(lm_metrics(cfg, loss_fn))
    return lambda params, batches: step(params, {}, batches)["val_loss"]


def param_shardings(tree, gpt_boxed, mesh, rules=shd.DEFAULT_RULES):
    """NamedShardings for any tree holding GPT params: a leaf whose path ends with a GPT param's path
    (and has its shape) takes that param's logical sharding; anything else (heads, adapters) replicates."""
    by_path = {}
    gpt_shardings = shd.logical_sharding(gpt_boxed, mesh, rules)
    for path, sharding in jax.tree_util.tree_leaves_with_path(gpt_shardings):
        by_path[_names(path)] = sharding
    shapes = {k: v.shape for k, v in ((_names(p), l) for p, l in jax.tree_util.tree_leaves_with_path(nn.meta.unbox(gpt_boxed)))}

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


def task_state_shardings(init_fn, gpt_cfg: ModelConfig, tx: optax.GradientTransformation, mesh, rules=shd.DEFAULT_RULES):
    """(abstract TrainState, NamedSharding tree) for `init_fn(rng) -> (trainable, frozen)`, allocating nothing."""
    params, frozen = jax.eval_shape(init_fn, jax.random.key(0))
    gpt_boxed = jax.eval_shape(lambda: init_params(gpt_cfg, jax.random.key(0)))
    param_sharding = param_shardings(params, gpt_boxed, mesh, rules)
    frozen_sharding = param_shardings(frozen, gpt_boxed, mesh, rules)
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


def lm_init(cfg: ModelConfig):
    return lambda rng: (nn.meta.unbox(init_params(cfg, rng)), {})


def state_shardings(cfg: ModelConfig, tx: optax.GradientTransformation, mesh, rules=shd.DEFAULT_RULES):
    """(abstract TrainState, matching NamedSharding tree) of LM pretraining, without allocating anything."""
    return task_state_shardings(lm_init(cfg), cfg, tx, mesh, rules)


def create_state(init_fn, tx: optax.GradientTransformation, seed: int, shardings, *args) -> TrainState:
    """Initialise directly into the shards (never whole on one device). `init_fn(rng, *args) -> (trainable,
    frozen)`; `args` (e.g. pretrained weights) go in as jit arguments, not as compiled-in constants."""

    def init(rng, *args):
        init_rng, train_rng = jax.random.split(rng)
        params, frozen = init_fn(init_rng, *args)
        return TrainState(
            step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), rng=train_rng, frozen=frozen
        )

    return jax.jit(init, out_shardings=shardings)(jax.random.key(seed), *args)


def create_train_state(cfg: ModelConfig, tx: optax.GradientTransformation, seed: int, shardings) -> TrainState:
    """LM pretraining state: params and optimizer state initialised into their shards."""
    return create_state(lm_init(cfg), tx, seed, shardings)
