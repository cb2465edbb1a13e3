"""AdaLoRA (Zhang et al. 2023): SVD-form LoRA whose rank budget is reallocated across matrices in training.

Each target kernel (viewed as (fan_in, fan_out), see gpt_jax.peft.lora) gets a triplet set
P[in, r], Λ[r], Q[r, out] and W_eff = W + (alpha / r) * P diag(Λ) Q (HF: scaling / ranknum with
ranknum = the initial r). P, Q ~ N(0, 0.02²), Λ = 0, so a fresh adapter is exactly the base.
Under scan_layers every layer of a stacked kernel is its own matrix with its own triplets.

The rank allocator lives in the optimizer (`wrap_optimizer`), so it is jitted with the step and
its state is checkpointed with the rest:
  * sensitivity per entry I = |θ ∘ g| (raw gradients, current params), smoothed as in the paper
    (eqs. 8-9): Ī ← β1 Ī + (1-β1) I, Ū ← β2 Ū + (1-β2) |I - Ī| (the new Ī; HF uses the old one), s = Ī Ū;
  * triplet score S_i = s(Λ_i) + mean_j s(P_ji) + mean_j s(Q_ij);
  * every mask_interval steps strictly between t_init = init_warmup*T and t_final = T - final_warmup*T,
    and once at t_final, only the top b(t) triplets over all matrices keep their Λ; the others are set
    to exactly 0 by that step's update. b(t) falls cubically from rank * matrices to
    target_rank * matrices, reached at t_final and held; the mask then stays fixed (HF's rank_pattern)
    and scores stop updating. The mask lives in the optimizer state, so pruned Λ stay 0 between mask
    steps (HF lets them drift until the next mask step); a pruned triplet can come back at a later mask
    step if its P/Q scores rise.
Steps t count optimizer updates from 1 (t = T is the last step of a T-step run).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gpt_jax.peft.base import options
from gpt_jax.peft.lora import DEFAULT_TARGETS, KernelView, LowRank

Params = Any


class AdaLoRAState(NamedTuple):
    count: jax.Array  # int32: updates applied so far
    ipt: Params  # Ī, shaped like the trainable tree
    unc: Params  # Ū
    # bool, shaped like the trainable tree (so any params sharding fits it): keep[path][x][..., i] along
    # the rank axis of p/lam/q is triplet i's status; only Λ is ever zeroed (HF semantics).
    keep: Params
    inner: optax.OptState


@dataclasses.dataclass(frozen=True)
class AdaLoRA(LowRank):
    """trainable = {'h_0/attn/query/kernel': {'p': [..., in, r], 'lam': [..., r], 'q': [..., r, out]}, ...}."""

    targets: str = DEFAULT_TARGETS
    rank: int = 8  # initial rank per matrix
    alpha: float = 16.0
    dropout: float = 0.0  # rank dropout on Λ (see gpt_jax.peft.lora)
    target_rank: int = 4  # average rank per matrix at the end of the schedule
    init_warmup: float = 0.1
    final_warmup: float = 0.3
    mask_interval: int = 10
    beta1: float = 0.85
    beta2: float = 0.85
    orth_reg: float = 0.1
    num_steps: int = 0  # T; 0 = unknown (split/combine work, wrap_optimizer needs it)

    name: ClassVar[str] = "adalora"

    def __post_init__(self):
        self._validate()
        if not 1 <= int(self.target_rank) <= int(self.rank):
            raise ValueError(
                f"peft.adalora.target_rank={self.target_rank} must be in [1, peft.adalora.rank={self.rank}]"
            )
        if int(self.mask_interval) < 1:
            raise ValueError(f"peft.adalora.mask_interval={self.mask_interval} must be >= 1")
        for k in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, k) < 1.0:
                raise ValueError(f"peft.adalora.{k}={getattr(self, k)} must be in [0, 1)")
        if self.num_steps > 0 and not self.t_init < self.t_final:
            raise ValueError(
                f"AdaLoRA budget schedule is empty: t_init={self.t_init} >= t_final={self.t_final} for "
                f"{self.num_steps} steps; lower peft.adalora.init_warmup ({self.init_warmup}) + "
                f"peft.adalora.final_warmup ({self.final_warmup}) below 1 or train longer"
            )

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None, num_steps: int) -> "AdaLoRA":
        kw = {k: v for k, v in options(cls, section).items() if k != "num_steps"}
        return cls(**kw, num_steps=int(num_steps))

    # ------------------------------------------------------------------ parameters

    def noise_size(self, view: KernelView) -> int:
        return view.matrices * self.rank * (view.fan_in + view.fan_out)

    @staticmethod
    def draw(rng: jax.Array, n: int) -> jax.Array:
        return 0.02 * jax.random.normal(rng, (n,), jnp.float32)

    def init_target(self, view: KernelView, noise: jax.Array) -> dict[str, jax.Array]:
        n_p = view.matrices * view.fan_in * self.rank
        return {
            "p": noise[:n_p].reshape(*view.batch, view.fan_in, self.rank),
            "lam": jnp.zeros((*view.batch, self.rank), jnp.float32),
            "q": noise[n_p:].reshape(*view.batch, self.rank, view.fan_out),
        }

    @staticmethod
    def rank_shape(entry) -> tuple[int, ...]:
        return entry["lam"].shape

    def delta(self, entry, rank_mask=None) -> jax.Array:
        lam = entry["lam"] if rank_mask is None else entry["lam"] * rank_mask
        return self.scale * jnp.matmul(entry["p"] * lam[..., None, :], entry["q"], precision=jax.lax.Precision.HIGHEST)

    def regularizer(self, trainable: Params) -> jax.Array:
        """orth_reg * mean over matrices of ||PᵀP - I||²_F + ||QQᵀ - I||²_F (0 for orthonormal P, Q)."""
        if not trainable:
            return jnp.zeros((), jnp.float32)
        total, matrices = jnp.zeros((), jnp.float32), 0
        eye = jnp.eye(self.rank, dtype=jnp.float32)
        hi = jax.lax.Precision.HIGHEST
        for entry in trainable.values():
            p, q = entry["p"], entry["q"]
            ptp = jnp.matmul(jnp.swapaxes(p, -1, -2), p, precision=hi)
            qqt = jnp.matmul(q, jnp.swapaxes(q, -1, -2), precision=hi)
            total = total + jnp.sum((ptp - eye) ** 2) + jnp.sum((qqt - eye) ** 2)
            matrices += math.prod(p.shape[:-2])
        return self.orth_reg * total / matrices

    # ------------------------------------------------------------------ budget

    @property
    def t_init(self) -> int:
        return int(self.init_warmup * self.num_steps)

    @property
    def t_final(self) -> int:
        return self.num_steps - int(self.final_warmup * self.num_steps)

    @staticmethod
    def num_matrices(trainable: Params) -> int:
        return sum(math.prod(e["lam"].shape[:-1]) for e in trainable.values())

    def budget(self, t, matrices: int):
        """Triplets kept after update t (jnp int32; t may be traced): cubic from rank*m to target_rank*m."""
        init, target = self.rank * matrices, self.target_rank * matrices
        span = max(self.t_final - self.t_init, 1)
        frac = 1.0 - (jnp.asarray(t, jnp.float32) - self.t_init) / span
        mid = jnp.floor((init - target) * frac**3 + target).astype(jnp.int32)
        return jnp.where(t <= self.t_init, init, jnp.where(t >= self.t_final, target, mid)).astype(jnp.int32)

    def triplet_scores(self, ipt: Params, unc: Params) -> dict[str, jax.Array]:
        """{path: S [..., r]} = s(Λ) + mean s(P) over in + mean s(Q) over out, s = Ī·Ū."""
        out = {}
        for path in sorted(ipt):
            s = {k: ipt[path][k] * unc[path][k] for k in ("p", "lam", "q")}
            out[path] = s["lam"] + s["p"].mean(axis=-2) + s["q"].mean(axis=-1)
        return out

    def _top_budget(self, scores: dict[str, jax.Array], budget) -> dict[str, jax.Array]:
        """keep [..., r] per path: exactly `budget` triplets over all matrices, highest scores first."""
        paths, r = sorted(scores), self.rank
        # Concatenate [matrices, r] blocks, not flattened vectors: XLA:CPU took ~25 s (measured, loaded host) to compile the
        # flattened form for 8 stacked targets (~1 s this way).
        flat = jnp.concatenate([scores[p].reshape(-1, r) for p in paths]).reshape(-1)
        order = jnp.argsort(-flat, stable=True)  # ties: lower index first, so the count is exact
        rank = jnp.argsort(order, stable=True)  # position of each triplet in that order
        keep = (rank < budget).reshape(-1, r)
        out, start = {}, 0
        for p in paths:
            m = scores[p].size // r
            out[p] = keep[start : start + m].reshape(scores[p].shape)
            start += m
        return out

    # ------------------------------------------------------------------ optimizer

    def wrap_optimizer(self, tx: optax.GradientTransformation) -> optax.GradientTransformation:
        """`tx` plus the rank allocator; update needs params (`tx.update(grads, state, params)`)."""
        if self.num_steps <= 0:
            raise ValueError(
                "AdaLoRA needs the run's step count for its budget schedule; build it with from_config(peft, num_steps)"
            )
        b1, b2 = float(self.beta1), float(self.beta2)

        def init(params):
            zeros = jax.tree.map(jnp.zeros_like, params)
            return AdaLoRAState(
                count=jnp.zeros((), jnp.int32),
                ipt=zeros,
                unc=jax.tree.map(jnp.zeros_like, params),
                keep=jax.tree.map(lambda x: jnp.ones(x.shape, jnp.bool_), params),
                inner=tx.init(params),
            )

        def update(grads, state: AdaLoRAState, params=None):
            if params is None:
                raise ValueError("AdaLoRA's optimizer scores |param * grad|: call tx.update(grads, state, params)")
            t = state.count + 1
            scoring = t <= self.t_final  # HF: scores freeze once the final budget is fixed
            sens = jax.tree.map(lambda p, g: jnp.abs(p * g), params, grads)
            ipt_new = jax.tree.map(lambda i, s: b1 * i + (1 - b1) * s, state.ipt, sens)
            unc_new = jax.tree.map(lambda u, s, i: b2 * u + (1 - b2) * jnp.abs(s - i), state.unc, sens, ipt_new)
            ipt = jax.tree.map(lambda n, o: jnp.where(scoring, n, o), ipt_new, state.ipt)
            unc = jax.tree.map(lambda n, o: jnp.where(scoring, n, o), unc_new, state.unc)

            updates, inner = tx.update(grads, state.inner, params)

            matrices = self.num_matrices(params)
            on_interval = (t > self.t_init) & (t < self.t_final) & (t % self.mask_interval == 0)
            remask = on_interval | (t == self.t_final)
            fresh = self._top_budget(self.triplet_scores(ipt, unc), self.budget(t, matrices))
            keep_r = {path: jnp.where(remask, fresh[path], state.keep[path]["lam"]) for path in params}
            keep = {
                path: {
                    "p": jnp.broadcast_to(keep_r[path][..., None, :], params[path]["p"].shape),
                    "lam": keep_r[path],
                    "q": jnp.broadcast_to(keep_r[path][..., :, None], params[path]["q"].shape),
                }
                for path in params
            }
            # Pruned Λ: the update lands them on exactly 0 (x + (-x) == 0 in floating point).
            updates = {
                path: {**u, "lam": jnp.where(keep_r[path], u["lam"], -params[path]["lam"]).astype(u["lam"].dtype)}
                for path, u in updates.items()
            }
            return updates, AdaLoRAState(count=t, ipt=ipt, unc=unc, keep=keep, inner=inner)

        return optax.GradientTransformation(init, update)

    # ------------------------------------------------------------------ reporting

    @staticmethod
    def rank_allocation(trainable: Params) -> dict[str, int]:
        """{path: non-zero Λ count} (host); a stacked kernel reports each layer as 'path[i]'."""
        out = {}
        for path in sorted(trainable):
            nz = np.count_nonzero(np.asarray(trainable[path]["lam"]), axis=-1)
            if nz.ndim == 0:
                out[path] = int(nz)
            else:
                for i, n in enumerate(nz.reshape(-1)):
                    out[f"{path}[{i}]"] = int(n)
        return out
