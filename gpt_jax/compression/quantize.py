"""Weight-only post-training quantization of a GPT's params, the stored form and the in-memory form.

Stored (in the checkpoint's params tree): each weight matrix becomes {"q": int8 [I, O] (int4: uint8
[I / 2, O], two values a byte), "scale": float16 [I / group, O]} in its canonical view (qtensor);
quantization.json (gpt_jax.compression.stored) records the shapes. In memory (`restore`): per-channel
int8 matrices (the tables wte/wpe too: one scale per row serves the gather and the tied head) stay int8
as QuantizedTensor, read inside each matmul (batch-1 decoding is bound by weight bytes); grouped int8
and int4 are dequantized to float32 once at load.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from gpt_jax.compression import qtensor
from gpt_jax.compression.gptq import gptq_quantize
from gpt_jax.compression.matrices import Matrix, flat, matrices, unflat

METHODS = ("absmax", "gptq")


@dataclasses.dataclass(frozen=True)
class QuantSpec:
    bits: int
    group_size: int = 0  # 0: per output channel (one group over all inputs)
    method: str = "absmax"

    def __post_init__(self):
        if self.bits not in qtensor.BITS:
            raise ValueError(f"--bits={self.bits} is not supported; use --bits=8 or --bits=4")
        if self.method not in METHODS:
            hint = " (AWQ is not implemented: GPTQ is the calibrated method)" if self.method == "awq" else ""
            raise ValueError(f"--method={self.method!r} is not one of {list(METHODS)}{hint}")
        if self.group_size < 0:
            raise ValueError(f"--group_size={self.group_size} must be >= 0 (0: per channel)")


def check(params, spec: QuantSpec) -> list[Matrix]:
    """The matrices to quantize; one-line errors for a grouping that does not fit (before any work)."""
    found = matrices(params)
    for m in found:
        qtensor.check_grouping(spec.bits, spec.group_size, m.rows, m.key)
    return found


def quantize_params(params, spec: QuantSpec, hessians: dict[str, np.ndarray] | None = None) -> tuple[dict, dict]:
    """(stored params tree, {matrix key: record}) of float `params`; GPTQ needs `hessians` (calibrate)."""
    found = check(params, spec)
    leaves = {p: np.asarray(v) for p, v in flat(jax.device_get(params)).items()}
    records = {}
    for m in found:
        w_IxO = m.view(leaves[m.path])
        group = qtensor.check_grouping(spec.bits, spec.group_size, m.rows, m.key)
        if spec.method == "gptq" and not m.transposed:  # the tables are gathers too: plain absmax
            q, scale = gptq_quantize(w_IxO, hessians[m.key], spec.bits, group)
        else:
            q, scale = qtensor.quantize_groups(w_IxO, spec.bits, group)
        leaves[m.path] = {"q": qtensor.pack_int4(q) if spec.bits == 4 else q, "scale": scale}
        records[m.key] = {"shape": list(m.shape), "n_in": m.n_in, "transposed": m.transposed}
    return unflat(leaves), records


def dequantized_matrix(stored: dict, record: dict, bits: int) -> np.ndarray:
    q = qtensor.unpack_int4(np.asarray(stored["q"])) if bits == 4 else np.asarray(stored["q"])
    w_IxO = qtensor.dequantize_groups(q, np.asarray(stored["scale"]))
    m = Matrix((), tuple(record["shape"]), record["n_in"], record["transposed"])
    return m.unview(w_IxO)


def restore(stored_params, records: dict, bits: int, act_bits: int = 0) -> dict:
    """The in-memory params of a stored quantized tree (see the module docstring); act_bits=8: W8A8."""
    leaves = flat(stored_params)
    groups: dict[tuple[str, ...], dict] = {}
    for path, v in leaves.items():
        if path[:-1] and "/".join(path[:-1]) in records:
            groups.setdefault(path[:-1], {})[path[-1]] = v
    out = {p: v for p, v in leaves.items() if p[:-1] not in groups}
    for path, stored in groups.items():
        record = records["/".join(path)]
        per_channel = bits == 8 and np.shape(stored["scale"])[0] == 1
        if per_channel:
            shape, n_in, transposed = tuple(record["shape"]), record["n_in"], record["transposed"]
            q, scale = jax.device_get((stored["q"], stored["scale"]))
            out[path] = qtensor.int8_tensor(q, scale, shape, n_in, transposed, act_bits)
        else:
            out[path] = jnp.asarray(dequantized_matrix(jax.device_get(stored), record, bits))
    return unflat(out)


def dequantize_tree(params):
    """Every weight-only QuantizedTensor in `params` as its float32 array (for code that wants plain
    params: the same products). W8A8 tensors stay: their activation rounding is part of the model."""
    is_q = lambda x: isinstance(x, qtensor.QuantizedTensor)
    plain = lambda x: x.astype(jnp.float32) if is_q(x) and not x.act_bits else x
    return jax.tree.map(plain, params, is_leaf=is_q)
