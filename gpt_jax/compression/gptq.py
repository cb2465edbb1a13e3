"""GPTQ (Frantar et al. 2022, arXiv:2210.17323) for one matrix, and the calibration statistics it needs.

Chosen over AWQ-style scaling because it needs nothing but each matmul's input second moments
H = X^T X and adds no runtime op: AWQ's per-channel scales must be folded into the producer of the
matmul's input, which here exists only for ln_1 -> q/k/v and ln_2 -> fc (not for the attention out
projection or the GELU -> proj matmul). qwix 0.1.8 ships a GPTQ (qwix.contrib.gptq) but on its own
QArray types and through its interception of the model; this is the reference algorithm in NumPy
(float64) on our canonical [I, O] view, quantizing rows of I in order and pushing each row's error
onto the rows not yet quantized through the Cholesky factor of H^-1.
"""

from __future__ import annotations

import numpy as np

from gpt_jax.compression.qtensor import qmax, stored_scale


def gptq_quantize(
    w_IxO: np.ndarray, h_IxI: np.ndarray, bits: int, group: int, damp: float = 0.01
) -> tuple[np.ndarray, np.ndarray]:
    """(q int8 [I, O], scale float16 [I / group, O]) minimising ||X W - X Q||^2 for X^T X = h."""
    w = np.array(w_IxO, np.float64)
    h = np.array(h_IxI, np.float64)
    n, o = w.shape
    dead = np.diag(h) == 0  # inputs that never fire: their weights do not matter
    h[dead, dead] = 1.0
    w[dead] = 0.0
    h[np.diag_indices(n)] += damp * np.mean(np.diag(h))
    # upper U with H^-1 = U^T U: row i of U carries how row i's error spreads onto rows > i
    u = np.linalg.cholesky(np.linalg.inv(h)).T
    top = qmax(bits)
    q = np.zeros((n, o), np.int8)
    scales = np.zeros((n // group, o), np.float16)
    for i in range(n):
        if i % group == 0:  # the group's scale from its rows as updated so far
            scales[i // group] = stored_scale(np.abs(w[i : i + group]).max(axis=0) / top)
        s = scales[i // group].astype(np.float64)
        qi = np.clip(np.rint(w[i] / s), -top, top)
        q[i] = qi
        err = (w[i] - qi * s) / u[i, i]
        w[i + 1 :] -= np.outer(u[i, i + 1 :], err)
    return q, scales
