"""Magnitude pruning: masks (unstructured per matrix or global, or N:M such as 2:4), the optimizer
wrapper that keeps pruned weights at exactly zero, and the per-matrix sparsity report.

Pruned: every hidden kernel and an untied lm_head. The token embedding stays dense (it is a gather
as much as a matmul; pruning rows of it removes characters).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gpt_jax.compression.matrices import Matrix, flat, matrices, unflat

SCOPES = ("layer", "global")


def parse_pattern(pattern: str) -> tuple[int, int]:
    """ "2:4" -> (2, 4): keep N of every M consecutive input weights."""
    try:
        n, m = (int(p) for p in pattern.split(":"))
    except ValueError:
        raise ValueError(f"--pattern={pattern!r} is not N:M (e.g. --pattern=2:4)") from None
    if not 0 < n < m:
        raise ValueError(f"--pattern={pattern!r} needs 0 < N < M (e.g. --pattern=2:4)")
    return n, m


def check_sparsity(sparsity: float | None, pattern: str | None) -> float:
    """The fraction of weights to remove; one-line errors for values out of [0, 1) or a clash with N:M."""
    if pattern:
        n, m = parse_pattern(pattern)
        implied = 1 - n / m
        if sparsity is not None and abs(sparsity - implied) > 1e-9:
            raise ValueError(
                f"--pattern={pattern} means sparsity {implied:g}; drop --sparsity={sparsity:g} or match it"
            )
        return implied
    if sparsity is None:
        raise ValueError("give --sparsity=S (0 <= S < 1) or --pattern=N:M")
    if not 0 <= sparsity < 1:
        raise ValueError(f"--sparsity={sparsity:g} must be >= 0 and < 1 (the fraction of weights removed)")
    return sparsity


def prunable(params) -> list[Matrix]:
    return [m for m in matrices(params) if not m.transposed]


def _keep_top(a: np.ndarray, n_remove: int) -> np.ndarray:
    """Mask keeping all but the `n_remove` smallest |a| (ties broken by position: exact counts)."""
    order = np.argsort(np.abs(a).ravel(), kind="stable")
    mask = np.ones(a.size, bool)
    mask[order[:n_remove]] = False
    return mask.reshape(a.shape)


def nm_mask(w_IxO: np.ndarray, n: int, m: int, name: str = "weight") -> np.ndarray:
    """Keep the n largest |w| of every m consecutive inputs, per output column (2:4: NVIDIA's layout)."""
    i, o = w_IxO.shape
    if i % m:
        raise ValueError(f"--pattern={n}:{m} needs the input features of {name} ({i}) divisible by {m}")
    groups = np.abs(w_IxO).reshape(i // m, m, o)
    rank = np.argsort(np.argsort(-groups, axis=1, kind="stable"), axis=1, kind="stable")
    return (rank < n).reshape(i, o)


def magnitude_masks(params, sparsity: float, *, scope: str = "layer", pattern: str | None = None) -> dict:
    """Bool masks shaped like `params` (True: kept); all True for what is not pruned."""
    if scope not in SCOPES:
        raise ValueError(f"--scope={scope!r} is not one of {list(SCOPES)}")
    leaves = {p: np.asarray(v) for p, v in flat(jax.device_get(params)).items()}
    masks = {p: np.ones(np.shape(v), bool) for p, v in leaves.items()}
    found = prunable(params)
    if pattern:
        n, m = parse_pattern(pattern)
        for mat in found:
            masks[mat.path] = mat.unview(nm_mask(mat.view(leaves[mat.path]), n, m, mat.key))
    elif scope == "layer":
        for mat in found:
            w = leaves[mat.path]
            masks[mat.path] = _keep_top(w, int(round(sparsity * w.size)))
    else:
        flat_w = np.concatenate([leaves[mat.path].ravel() for mat in found])
        keep = _keep_top(flat_w, int(round(sparsity * flat_w.size)))
        start = 0
        for mat in found:
            size = leaves[mat.path].size
            masks[mat.path] = keep[start : start + size].reshape(leaves[mat.path].shape)
            start += size
    return unflat(masks)


def apply_masks(params, masks):
    return jax.tree.map(lambda p, m: jnp.where(m, p, jnp.zeros_like(p)), params, masks)


class MaskedState(NamedTuple):
    inner: optax.OptState
    masks: optax.Params  # bool, shaped like the params: part of the train state, so it resumes with it


def masked(tx: optax.GradientTransformation, masks) -> optax.GradientTransformation:
    """`tx` seeing only the kept weights' gradients (clipping and moments ignore pruned ones), and
    updates that put every pruned weight at exactly 0 whatever `tx` (weight decay included) proposes."""

    def init(params):
        return MaskedState(tx.init(params), jax.tree.map(jnp.asarray, masks))

    def update(grads, state, params=None):
        m = state.masks
        grads = jax.tree.map(lambda g, k: jnp.where(k, g, jnp.zeros_like(g)), grads, m)
        updates, inner = tx.update(grads, state.inner, params)
        # p + (-p) is exactly 0 in floating point: the mask is re-applied by the update itself
        updates = jax.tree.map(lambda u, p, k: jnp.where(k, u, -p), updates, params, m)
        return updates, MaskedState(inner, m)

    return optax.GradientTransformation(init, update)


def report(params) -> dict:
    """{"matrices": {key: {"shape", "zeros", "sparsity"}}, "prunable_sparsity", "total_sparsity"}: what is
    actually zero in `params` (measured, not what was asked)."""
    leaves = {p: np.asarray(v) for p, v in flat(jax.device_get(params)).items()}
    rows, zeros, size = {}, 0, 0
    for mat in prunable(params):
        w = leaves[mat.path]
        z = int((w == 0).sum())
        rows[mat.key] = {"shape": list(w.shape), "zeros": z, "sparsity": round(z / w.size, 6)}
        zeros, size = zeros + z, size + w.size
    total = sum(v.size for v in leaves.values())
    all_zeros = sum(int((v == 0).sum()) for v in leaves.values())
    return {
        "matrices": rows,
        "prunable_sparsity": round(zeros / max(size, 1), 6),
        "total_sparsity": round(all_zeros / total, 6),
    }


def nm_exact(w_IxO: np.ndarray, n: int, m: int) -> bool:
    """Every group of m consecutive inputs (per output) holds at most n nonzeros."""
    i, o = w_IxO.shape
    return bool(((w_IxO.reshape(i // m, m, o) != 0).sum(axis=1) <= n).all())
