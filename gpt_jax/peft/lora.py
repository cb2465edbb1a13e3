"""LoRA (Hu et al. 2021) in weight space: W_eff = W + (alpha / r) * A @ B on the targeted kernels.

The backbone is unchanged: `combine` adds the low-rank delta to each target kernel and the ordinary
GPT forward runs on the result, so every attention path, scan_layers, remat and the KV-cache decoder
work as they are, and `merge` (bake the delta in for serving) is the same computation.

Each target kernel is viewed as a (fan_in, fan_out) matrix exactly as Muon sees it
(`gpt_jax.models.gpt.matrix_dims`): q/k/v [D, H, K] -> in D, out H*K; attn out_kernel [H, K, D] -> in H*K,
out D; MLP kernels [in, out]. Under scan_layers a kernel carries a leading layer axis [n_layer, ...]
and its A/B are batched per layer ([n_layer, in, r], [n_layer, r, out]).

Embeddings (HF PEFT's nn.Embedding LoRA): the token table `wte` [V, D] (and the learned position
table `wpe` [block, D]) can be targeted too, viewed as (fan_in=V, fan_out=D): W_eff = W + scale * A @ B
with A [V, r], B [r, D], so row i's delta is scale * A[i] @ B. They are opt-in: an embedding is
targeted only when `targets` *fullmatches* its path (HF's regex rule), e.g. 'wte|attn/query', so
search-style patterns written for kernels ('.', 'mlp', the default) never pick them up; kernels keep
`re.search`. The zero factor is the other way round from kernels, as in HF and loralib: the per-token
rows A = 0 (HF's lora_embedding_A) and the shared projection B random with unit variance (HF's N(0, 1)
lora_embedding_B; here U(-sqrt 3, sqrt 3)). So training first moves each seen token's own r-vector,
not one B shared by the whole vocabulary (which shifts every row at once). wte is tied to the output
head, so the merged/combined wte is used by both the input lookup and the LM head (`logits = x @ wte.T`):
the delta adapts both, exactly as merging HF's embedding adapter into a tied model does.

HF PEFT semantics: A ~ kaiming-uniform(a=sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)), B = 0 (so a fresh
adapter is exactly the base), scale alpha / r.

Dropout: HF's `lora_dropout` drops the adapter's *input* x per token. A weight-space adapter never
sees x, so `dropout` here is rank dropout: each training step (only when `combine` gets an rng) a
Bernoulli(1 - p) mask over the r rank components of each target (per layer under scan_layers)
scales A's columns by mask / (1 - p). The mask is shared by every token of the step.

bf16 caveat: the delta is added in float32 and cast back to the kernel's dtype, so with
param_dtype=bfloat16 deltas below the kernel's bf16 resolution are rounded away in the forward.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

from gpt_jax.config import ModelConfig
from gpt_jax.models.gpt import matrix_dims
from gpt_jax.peft.base import options

Params = Any
DEFAULT_TARGETS = "attn/(query|key|value|out_kernel)"


@dataclasses.dataclass(frozen=True)
class KernelView:
    """A kernel of `shape` seen as `batch` stacked (fan_in, fan_out) matrices."""

    shape: tuple[int, ...]
    batch: tuple[int, ...]  # (n_layer,) under scan_layers, () otherwise
    fan_in: int
    fan_out: int
    embedding: bool = False  # a wte/wpe lookup table (input is one-hot)

    @property
    def matrices(self) -> int:
        return math.prod(self.batch)


def _axes(a) -> tuple[int, ...]:
    return tuple(a) if isinstance(a, (tuple, list)) else (a,)


EMBEDDINGS = ("wte", "wpe")  # top-level [rows, D] tables LoRA may target (opt-in, see module docstring)


def kernel_views(params: Params, embeddings: bool = False) -> dict[str, KernelView]:
    """{'h_0/attn/query/kernel': KernelView, ...} for every hidden matmul kernel (the ones Muon orthogonalises).

    embeddings=True adds the top-level `wte`/`wpe` tables that exist, viewed as (fan_in=rows, fan_out=D).
    """
    dims = traverse_util.flatten_dict(matrix_dims(params))
    flat = traverse_util.flatten_dict(params)
    views = {}
    for key, d in dims.items():
        if d is None:
            continue
        shape = tuple(flat[key].shape)
        red, out = _axes(d.reduction_axis), _axes(d.output_axis)
        nb = len(shape) - len(red) - len(out)
        # The reshape to [..batch, in, out] is only a view if the axes are laid out in that order.
        if red + out != tuple(range(nb, len(shape))):
            raise ValueError(f"kernel {'/'.join(key)} of shape {shape} is not laid out [batch.., in.., out..]")
        views["/".join(key)] = KernelView(
            shape, shape[:nb], math.prod(shape[i] for i in red), math.prod(shape[i] for i in out)
        )
    if embeddings:
        for name in EMBEDDINGS:
            leaf = flat.get((name,))
            if leaf is not None and len(leaf.shape) == 2:
                views[name] = KernelView(tuple(leaf.shape), (), leaf.shape[0], leaf.shape[1], embedding=True)
    return views


def is_embedding(path: str) -> bool:
    return path in EMBEDDINGS


def find_targets(params: Params, pattern: str, key: str = "peft.lora.targets") -> dict[str, KernelView]:
    """The kernels whose '/'-joined path `re.search`es `pattern`; none -> ValueError listing real paths
    (`key`: the config key the pattern came from, for the message)."""
    try:
        regex = re.compile(pattern)
    except re.error as e:
        raise ValueError(f"{key}={pattern!r} is not a valid regex ({e}); fix the pattern") from None
    views = kernel_views(params, embeddings=True)
    # Kernels: re.search. Embeddings: opt-in, the whole path must match (so '.' or 'mlp' never adds wte).
    hit = lambda path: regex.fullmatch(path) if is_embedding(path) else regex.search(path)
    found = {path: v for path, v in sorted(views.items()) if hit(path)}
    if not found:
        examples = ", ".join(sorted(views)[:6])
        raise ValueError(
            f"{key}={pattern!r} matches no kernel; kernel paths look like: {examples}; set {key} to match some"
        )
    return found


def add_deltas(params: Params, deltas: Mapping[str, jax.Array], sign: float = 1.0) -> Params:
    """params with kernel `path` replaced by W + sign * delta (delta [..batch, in, out], float32 math)."""
    flat = traverse_util.flatten_dict(params)
    for path, delta in deltas.items():
        key = tuple(path.split("/"))
        if key not in flat:
            raise ValueError(f"adapter targets {path}, which these params do not have; use the base it was trained on")
        w = flat[key]
        flat[key] = (w.astype(jnp.float32) + sign * delta.reshape(w.shape)).astype(w.dtype)
    return traverse_util.unflatten_dict(flat)


def rank_dropout_mask(rng: jax.Array, shape: tuple[int, ...], rate: float) -> jax.Array:
    """Bernoulli(1 - rate) keep mask over rank components, pre-scaled by 1 / (1 - rate)."""
    keep = jax.random.bernoulli(rng, 1.0 - rate, shape)
    return keep.astype(jnp.float32) / (1.0 - rate)


class LowRank:
    """What LoRA and AdaLoRA share: targets, combine/merge/unmerge over per-target deltas.

    Subclasses define `name`, `noise_size(view)`, `draw(rng, n)`, `init_target(view, noise) -> entry`,
    `rank_shape(entry)` and `delta(entry, rank_mask) -> [..., in, out]`.
    """

    name: ClassVar[str]
    targets: str
    rank: int
    alpha: float
    dropout: float

    def _validate(self):
        key = f"peft.{self.name}"
        if int(self.rank) < 1:
            raise ValueError(f"{key}.rank={self.rank} must be >= 1")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"{key}.dropout={self.dropout} must be in [0, 1)")
        try:
            re.compile(self.targets)
        except re.error as e:
            raise ValueError(f"{key}.targets={self.targets!r} is not a valid regex ({e}); fix the pattern") from None

    @property
    def scale(self) -> float:
        return float(self.alpha) / int(self.rank)

    def model_config(self, base: ModelConfig) -> ModelConfig:
        return base

    def split(self, params: Params, rng: jax.Array) -> tuple[Params, Params]:
        targets = find_targets(params, self.targets, f"peft.{self.name}.targets")
        # One random draw sliced per target: a threefry per target shape costs a compile each (~1 s on CPU).
        sizes = [self.noise_size(view) for view in targets.values()]
        noise = self.draw(rng, sum(sizes))
        trainable, start = {}, 0
        for (path, view), n in zip(targets.items(), sizes):
            trainable[path] = self.init_target(view, noise[start : start + n])
            start += n
        return trainable, params

    def deltas(self, trainable: Params, rng: jax.Array | None = None) -> dict[str, jax.Array]:
        """{path: delta [..batch, in, out]}; rank dropout on when `rng` is given and dropout > 0."""
        out = {}
        for i, path in enumerate(sorted(trainable)):
            entry = trainable[path]
            mask = None
            if rng is not None and self.dropout > 0:
                mask = rank_dropout_mask(jax.random.fold_in(rng, i), self.rank_shape(entry), float(self.dropout))
            out[path] = self.delta(entry, mask)
        return out

    def combine(self, trainable: Params, frozen: Params, rng: jax.Array | None = None) -> Params:
        return add_deltas(frozen, self.deltas(trainable, rng))

    def merge(self, params: Params, trainable: Params) -> Params:
        """Plain GPT params with the adapter baked in (no dropout): serve/export without PEFT code."""
        return add_deltas(params, self.deltas(trainable))

    def unmerge(self, merged: Params, trainable: Params) -> Params:
        """The base params back from `merge`'s output (equal up to float rounding)."""
        return add_deltas(merged, self.deltas(trainable), sign=-1.0)

    def regularizer(self, trainable: Params) -> jax.Array:
        return 0.0

    def wrap_optimizer(self, tx):
        return tx


@dataclasses.dataclass(frozen=True)
class LoRA(LowRank):
    """trainable = {'h_0/attn/query/kernel': {'a': A[..., in, r], 'b': B[..., r, out]}, ...}; frozen = the GPT params."""

    targets: str = DEFAULT_TARGETS
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0  # rank dropout (see module docstring)
    plus_ratio: float = 1.0  # LoRA+ (Hayou et al. 2024): B's learning rate is plus_ratio x A's (HF loraplus_lr_ratio)

    name: ClassVar[str] = "lora"

    def __post_init__(self):
        self._validate()
        if not float(self.plus_ratio) > 0:
            raise ValueError(f"peft.lora.plus_ratio={self.plus_ratio} must be > 0 (1 = plain LoRA)")

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None, num_steps: int = 0) -> "LoRA":
        del num_steps  # LoRA has no schedule
        return cls(**options(cls, section))

    def wrap_optimizer(self, tx):
        return tx if self.plus_ratio == 1.0 else optax.chain(tx, scale_b_updates(float(self.plus_ratio)))

    def noise_size(self, view: KernelView) -> int:
        return view.matrices * (view.fan_out if view.embedding else view.fan_in) * self.rank

    @staticmethod
    def draw(rng: jax.Array, n: int) -> jax.Array:
        return jax.random.uniform(rng, (n,), jnp.float32, -1.0, 1.0)

    def init_target(self, view: KernelView, noise: jax.Array) -> dict[str, jax.Array]:
        if view.embedding:  # HF: lora_embedding_A (per-token) = 0, lora_embedding_B ~ unit variance
            a = jnp.zeros((view.fan_in, self.rank), jnp.float32)
            return {"a": a, "b": noise.reshape(self.rank, view.fan_out) * math.sqrt(3.0)}
        # HF: kaiming_uniform_(A, a=sqrt(5)) -> bound = gain * sqrt(3 / fan_in) with gain = sqrt(1/3).
        a = noise.reshape(*view.batch, view.fan_in, self.rank) / math.sqrt(view.fan_in)
        b = jnp.zeros((*view.batch, self.rank, view.fan_out), jnp.float32)
        return {"a": a, "b": b}

    @staticmethod
    def rank_shape(entry) -> tuple[int, ...]:
        return (*entry["a"].shape[:-2], entry["a"].shape[-1])

    def delta(self, entry, rank_mask=None) -> jax.Array:
        a = entry["a"] if rank_mask is None else entry["a"] * rank_mask[..., None, :]
        return self.scale * jnp.matmul(a, entry["b"], precision=jax.lax.Precision.HIGHEST)


def scale_b_updates(ratio: float) -> optax.GradientTransformation:
    """LoRA+: multiply the final updates of every B by `ratio`, i.e. B trains at ratio x the schedule's lr.

    Applied after the base optimizer, so with Adam(W) B's step (and its decoupled weight decay) is
    ratio x A's; A, the head and anything else pass through unchanged."""

    def update(updates, state, params=None):
        del params
        scaled = {
            path: ({**u, "b": u["b"] * ratio} if isinstance(u, Mapping) and "b" in u else u)
            for path, u in updates.items()
        }
        return scaled, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)
