"""Gradual magnitude pruning during the fine-tune (Zhu & Gupta 2017, as jaxpruner's polynomial schedule):
the sparsity ramps from s0 to s over `steps` updates as s_t = s + (s0 - s) (1 - t / steps)^3, and every
`every` updates each prunable matrix's mask is recomputed by magnitude at s_t (per matrix). Pruned weights
are zero, so they stay the smallest and the masks only grow; after the ramp the masks are fixed at s.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from gpt_jax.compression.matrices import flat, unflat
from gpt_jax.compression.prune import check_sparsity, prunable


@dataclasses.dataclass(frozen=True)
class GradualSchedule:
    final: float  # s: sparsity at the end of the ramp
    steps: int  # N: updates the ramp takes
    every: int = 10  # k: masks recomputed every k updates
    initial: float = 0.0  # s0
    power: int = 3

    def __post_init__(self):
        check_sparsity(self.final, None)
        check_sparsity(self.initial, None)
        if self.initial > self.final:
            raise ValueError(f"the initial sparsity {self.initial:g} exceeds the final {self.final:g}")
        if self.steps < 1 or self.every < 1:
            raise ValueError(f"--gradual_steps={self.steps} and --mask_every={self.every} must be >= 1")

    def sparsity_at(self, t):
        """s_t after t updates (t may be traced)."""
        frac = jnp.clip(jnp.asarray(t, jnp.float32) / self.steps, 0.0, 1.0)
        return self.final + (self.initial - self.final) * (1.0 - frac) ** self.power


def magnitude_mask(w, sparsity):
    """True for all but the round(sparsity * size) smallest |w| (traceable; ties at the threshold are
    kept, so a matrix may end a few weights short of its target)."""
    a = jnp.abs(w).ravel()
    n_remove = jnp.round(sparsity * a.size).astype(jnp.int32)
    threshold = jnp.sort(a)[jnp.clip(n_remove - 1, 0, a.size - 1)]
    return jnp.where(n_remove > 0, jnp.abs(w) > threshold, jnp.ones(w.shape, bool))


class GradualState(NamedTuple):
    inner: optax.OptState
    masks: optax.Params  # bool, shaped like the params (True: kept); resumes with the train state
    count: jax.Array  # updates applied so far


def gradual_masked(
    tx: optax.GradientTransformation, schedule: GradualSchedule, params_like
) -> optax.GradientTransformation:
    """`tx` with masks recomputed on the schedule; after each update pruned weights are exactly 0.
    `params_like`: the params (or their shapes) naming the prunable matrices."""
    paths = {m.path for m in prunable(params_like)}

    def recompute(params, masks, sparsity):
        leaves, old = flat(params), flat(masks)
        new = {p: magnitude_mask(leaves[p], sparsity) & old[p] if p in paths else old[p] for p in old}
        return unflat(new)

    def init(params):
        masks = jax.tree.map(lambda p: jnp.ones(jnp.shape(p), bool), params)
        if schedule.initial > 0:
            masks = recompute(params, masks, schedule.initial)
        return GradualState(tx.init(params), masks, jnp.zeros((), jnp.int32))

    def update(grads, state, params=None):
        count = state.count + 1
        due = (count % schedule.every == 0) & (count <= schedule.steps + schedule.every - 1)
        s_t = schedule.sparsity_at(jnp.minimum(count, schedule.steps))
        m = jax.lax.cond(due, lambda: recompute(params, state.masks, s_t), lambda: state.masks)
        grads = jax.tree.map(lambda g, k: jnp.where(k, g, jnp.zeros_like(g)), grads, m)
        updates, inner = tx.update(grads, state.inner, params)
        updates = jax.tree.map(lambda u, p, k: jnp.where(k, u, -p), updates, params, m)
        return updates, GradualState(inner, m, count)

    return optax.GradientTransformation(init, update)
