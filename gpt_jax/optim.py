"""Optax optimizer from `config.optim`: schedule, weight-decay mask, clipping."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import optax
from flax import traverse_util

SCHEDULES = ("cosine", "linear", "constant")
OPTIMIZERS = ("adamw", "lion", "muon", "sgd")


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


def map_with_path(fn, params):
    """fn(path, leaf) over a nested dict, keeping empty subtrees (a linear probe's backbone is `{}`),
    so the result has the params' exact tree structure, as optax masks require."""
    flat = traverse_util.flatten_dict(params, keep_empty_nodes=True)
    return traverse_util.unflatten_dict({k: v if v is traverse_util.empty_node else fn(k, v) for k, v in flat.items()})


def decay_mask(params, decay_embeddings: bool = False):
    """True for matmul kernels (and embeddings if asked); biases, norm scales never decay."""

    def decays(path, leaf) -> bool:
        name = path[-1]
        if name in ("wte", "wpe"):
            return decay_embeddings
        return (name == "lm_head" or name.endswith("kernel")) and leaf.ndim >= 2

    return map_with_path(decays, params)


def make_optimizer(
    optim: Mapping[str, Any], num_steps: int, matrix_dims: Callable[[Any], Any] | None = None
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """`matrix_dims`: the model family's (fan_in, fan_out) view of its matrices, which Muon needs."""
    schedule = make_schedule(optim, num_steps)
    name = optim.get("name", "adamw")
    mask = lambda p: decay_mask(p, bool(optim.get("decay_embeddings", False)))
    b1, b2 = float(optim["b1"]), float(optim["b2"])
    wd = float(optim["weight_decay"])
    if name == "adamw":
        opt = optax.adamw(schedule, b1=b1, b2=b2, eps=float(optim.get("eps", 1e-8)), weight_decay=wd, mask=mask)
    elif name == "lion":
        opt = optax.lion(schedule, b1=b1, b2=b2, weight_decay=wd, mask=mask)
    elif name == "muon":
        # Orthogonalised momentum on the hidden matmul kernels, AdamW on embeddings/head/norms/biases.
        # consistent_rms=0.2 scales Muon updates to AdamW's RMS, so one optim.lr serves both.
        opt = optax.contrib.muon(
            schedule,
            beta=b1 if b1 > 0.9 else 0.95,
            weight_decay=wd,
            weight_decay_mask=mask,
            adam_b1=b1,
            adam_b2=b2,
            adam_weight_decay=wd,
            muon_weight_dimension_numbers=_required(
                matrix_dims, "optim.name=muon needs the model family's matrix_dims"
            ),
            consistent_rms=0.2,
            ns_steps=int(optim.get("muon_ns_steps", 5)),
        )
    elif name == "sgd":
        opt = optax.chain(optax.add_decayed_weights(wd, mask), optax.sgd(schedule, momentum=b1))
    else:
        raise ValueError(f"optim.name={name!r} is not one of {OPTIMIZERS}")
    clip = optim.get("clip")
    if clip:
        opt = optax.chain(optax.clip_by_global_norm(float(clip)), opt)
    return opt, schedule


def _required(value, what: str):
    if value is None:
        raise ValueError(f"{what}; pass make_optimizer(..., matrix_dims=family.matrix_dims)")
    return value


def tree_bytes(tree) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree) if hasattr(x, "dtype"))
