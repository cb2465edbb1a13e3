"""Calibration statistics for GPTQ: H = X^T X of the input X of every weight matrix, over token windows
of the run's own training data (its task's train batches: the data the model was fitted to). Padded
rows (a classifier's sentences) count their real tokens only: `lengths_N` masks the pad positions."""

from __future__ import annotations

import contextlib
import math
from unittest import mock

import jax
import numpy as np

from gpt_jax import attention, layers, model
from gpt_jax.compression.matrices import flat, matrices


def _contracted_rows(eqn: str, x) -> np.ndarray:
    """x's features that `eqn` contracts with the weight, as rows [N, I] (I in the weight's order)."""
    ins, out = eqn.replace(" ", "").split("->")
    xs, ws = ins.split(",")
    xs = xs.replace("...", "")
    x = np.asarray(x, np.float64)
    x = x.reshape((-1,) + x.shape[x.ndim - len(xs) :]) if len(xs) < x.ndim else x
    xs = xs if len(xs) == x.ndim else "Z" + xs
    contracted = "".join(c for c in ws if c in xs and c not in out)
    batch = "".join(c for c in xs if c not in contracted)
    moved = np.einsum(f"{xs}->{batch}{contracted}", x)
    return moved.reshape(-1, math.prod(moved.shape[len(batch) :]))


@contextlib.contextmanager
def _recording(params, hessians: dict[str, np.ndarray], real: dict):
    """gpt_jax's one matmul (layers.matmul, as bound in every module that calls it) recording the
    input of each weight matrix, found by identity: run the model eagerly, not under jit.
    real["rows"]: bool [B * L] of the current batch's real positions (None: all of them)."""
    leaves = flat(params)
    by_id = {id(leaves[m.path]): m for m in matrices(params)}
    original = layers.matmul

    def recording(eqn, x, w, cfg):
        m = by_id.get(id(w))
        if m is not None:
            rows = _contracted_rows(eqn, x)
            keep = real.get("rows")
            if keep is not None and len(rows) == len(keep):  # rows are (batch, position)-ordered
                rows = rows[keep]
            hessians[m.key] = hessians.get(m.key, 0.0) + rows.T @ rows
        return original(eqn, x, w, cfg)

    with contextlib.ExitStack() as stack:
        for module in (layers, attention, model):
            stack.enter_context(mock.patch.object(module, "matmul", recording))
        yield


def collect_hessians(
    cfg, params, windows_NxL: np.ndarray, batch: int = 16, lengths_N: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """{matrix key: X^T X [I, I] float64} of the float model over `windows_NxL` (token ids); with
    `lengths_N`, only each row's first lengths_N[i] positions (left-aligned text, then padding)."""
    hessians: dict[str, np.ndarray] = {}
    real: dict = {"rows": None}
    gpt = model.GPT(cfg)
    params = jax.tree.map(np.asarray, params)
    with _recording(params, hessians, real), jax.disable_jit():
        for i in range(0, len(windows_NxL), batch):
            ids_BxL = np.asarray(windows_NxL[i : i + batch])
            if lengths_N is not None:
                real_BxL = np.arange(ids_BxL.shape[1])[None] < np.asarray(lengths_N[i : i + batch])[:, None]
                real["rows"] = real_BxL.reshape(-1)
            gpt.apply({"params": params}, ids_BxL)
    missing = [m.key for m in matrices(params) if m.key not in hessians and not m.transposed]  # tables: gathers
    if missing:
        raise RuntimeError(f"calibration never saw the input of {missing}; the model's matmuls changed")
    return hessians
