"""Optax optimizer from `config.optim`: schedule, weight-decay mask, clipping."""

from __future__ import annotations

from typing import Any, Mapping

import jax
import optax
from flax import traverse_util

SCHEDULES = ("cosine", "linear", "constant")


def make_schedule(optim: Mapping[str, Any], num_steps: int) -> optax.Schedule:
    """Linear warmup from 0 to `lr`, then cosine/linear decay to `min_lr` at `decay_steps` (default num_steps)."""
    lr, warmup = float(optim["lr"]), int(optim["warmup_steps"])
    min_lr = float(optim.get("min_lr") or 0.0)
    decay_steps = int(optim.get("decay_steps") or num_steps)
    kind = optim.get("schedule", "cosine")
    if kind not in SCHEDULES:
        raise ValueError(f"optim.schedule={kind!r} is not one of {SCHEDULES}")
    if kind == "constant":
        return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr)], [warmup])
    if kind == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(decay_steps, warmup + 1), min_lr)
    return optax.join_schedules(
        [optax.linear_schedule(0.0, lr, warmup), optax.linear_schedule(lr, min_lr, max(decay_steps - warmup, 1))],
        [warmup],
    )


def decay_mask(params, decay_embeddings: bool = False):
    """True for matmul kernels (and embeddings if asked); biases, norm scales never decay."""
    flat = traverse_util.flatten_dict(params)

    def decays(path, leaf) -> bool:
        name = path[-1]
        if name in ("wte", "wpe"):
            return decay_embeddings
        return (name == "lm_head" or name.endswith("kernel")) and leaf.ndim >= 2

    return traverse_util.unflatten_dict({k: decays(k, v) for k, v in flat.items()})


def make_optimizer(optim: Mapping[str, Any], num_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    schedule = make_schedule(optim, num_steps)
    name = optim.get("name", "adamw")
    mask = lambda p: decay_mask(p, bool(optim.get("decay_embeddings", False)))
    b1, b2 = float(optim["b1"]), float(optim["b2"])
    wd = float(optim["weight_decay"])
    if name == "adamw":
        opt = optax.adamw(schedule, b1=b1, b2=b2, eps=float(optim.get("eps", 1e-8)), weight_decay=wd, mask=mask)
    elif name == "lion":
        opt = optax.lion(schedule, b1=b1, b2=b2, weight_decay=wd, mask=mask)
    elif name == "sgd":
        opt = optax.chain(optax.add_decayed_weights(wd, mask), optax.sgd(schedule, momentum=b1))
    else:
        raise ValueError(f"optim.name={name!r} is not one of ('adamw', 'lion', 'sgd')")
    clip = optim.get("clip")
    if clip:
        opt = optax.chain(optax.clip_by_global_norm(float(clip)), opt)
    return opt, schedule


def tree_bytes(tree) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree) if hasattr(x, "dtype"))
