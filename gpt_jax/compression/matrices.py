"""Which params of a GPT are weight matrices, and their canonical [I, O] view (gpt_jax.compression.qtensor).

Quantized: every `*kernel` (Dense, q/k/v, attention out), the untied `lm_head`, the token embedding
`wte` (the tied head) and a learned position table `wpe` (tables are stored transposed: their rows are
outputs). Pruned: the kernels and lm_head only. Kept float: norms, biases (a few KB).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class Matrix:
    path: tuple[str, ...]
    shape: tuple[int, ...]
    n_in: int  # leading input axes (the contracted ones) of the stored weight
    transposed: bool  # the weight is [O, I] (wte: rows are vocabulary entries, the head's outputs)

    @property
    def key(self) -> str:
        return "/".join(self.path)

    @property
    def rows(self) -> int:
        return self.shape[-1] if self.transposed else math.prod(self.shape[: self.n_in])

    def view(self, w) -> np.ndarray:
        """The weight as float32 [I, O]."""
        w = np.asarray(w, np.float32)
        return w.T if self.transposed else w.reshape(self.rows, -1)

    def unview(self, w_IxO) -> np.ndarray:
        return w_IxO.T if self.transposed else w_IxO.reshape(self.shape)


def flat(tree, prefix=()) -> dict[tuple[str, ...], object]:
    """{path: leaf} of a nested dict of params."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(flat(v, prefix + (str(k),)))
        else:
            out[prefix + (str(k),)] = v
    return out


def unflat(items: dict[tuple[str, ...], object]) -> dict:
    out: dict = {}
    for path, v in items.items():
        node = out
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = v
    return out


def matrix_of(path: tuple[str, ...], shape: tuple[int, ...]) -> Matrix | None:
    name = path[-1]
    if "h" in path[:-1]:
        raise ValueError(
            "the run uses model.scan_layers=True (stacked layer weights); compression supports "
            "unstacked layers: train with --config.model.scan_layers=False"
        )
    if name in ("wte", "wpe"):  # tables read by row: their rows are the outputs
        return Matrix(path, shape, 1, True)
    if name == "out_kernel":
        return Matrix(path, shape, 2, False)
    if name == "lm_head" or name.endswith("kernel"):
        return Matrix(path, shape, 1, False)
    return None


def matrices(params) -> list[Matrix]:
    """The weight matrices of a (plain, unboxed) GPT params tree, in tree order."""
    found = [matrix_of(p, tuple(np.shape(v))) for p, v in flat(params).items()]
    return [m for m in found if m is not None]
