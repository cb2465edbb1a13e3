"""Quantized weights: symmetric absmax int8 / int4 over groups of the input axis, int4 packing, and
`QuantizedTensor`, an int8 matrix that dequantizes inside the matmul that reads it.

Every matrix is handled in one canonical 2-D view W_IxO (I: the contracted input features, O: the
output features): a Dense kernel [in, *out], the attention out_kernel [H, K, D] (in: H*K) and the tied
embedding [V, D] (used by the head as x @ wte.T: in D, out V, so its view is the transpose).
"""

from __future__ import annotations

import math

import flax
import jax.numpy as jnp
import numpy as np

BITS = (4, 8)


def qmax(bits: int) -> int:
    """Largest magnitude of the symmetric grid: 127 (int8), 7 (int4; -8 is never used)."""
    return 2 ** (bits - 1) - 1


def check_grouping(bits: int, group_size: int, rows: int, name: str) -> int:
    """The group size to use along I (`rows`): 0 means per channel (one group of all rows)."""
    if bits not in BITS:
        raise ValueError(f"--bits={bits} is not supported; use --bits=8 or --bits=4")
    group = group_size or rows
    if rows % group:
        raise ValueError(
            f"--group_size={group_size} does not divide the {rows} input features of {name}; "
            "use a divisor (32, 64, 128) or 0 for per channel"
        )
    if bits == 4 and group % 2:
        raise ValueError(f"--group_size={group_size} is odd; int4 packs two values per byte, use an even size")
    return group


def quantize_groups(w_IxO: np.ndarray, bits: int, group: int) -> tuple[np.ndarray, np.ndarray]:
    """(q int8 [I, O] in [-qmax, qmax], scale float16 [I / group, O]) with w ~ q * scale per group."""
    i, o = w_IxO.shape
    w_GxNxO = w_IxO.astype(np.float32).reshape(i // group, group, o)
    scale_Gx1xO = stored_scale(np.abs(w_GxNxO).max(axis=1, keepdims=True) / qmax(bits))
    q = np.clip(np.rint(w_GxNxO / scale_Gx1xO.astype(np.float32)), -qmax(bits), qmax(bits)).astype(np.int8)
    return q.reshape(i, o), scale_Gx1xO[:, 0]


def stored_scale(absmax_over_qmax: np.ndarray) -> np.ndarray:
    """Scales as stored: float16 (GPTQ's format; at group 64 a float32 scale would add 0.5 bit per
    weight), rounded up so the largest weight of its group still fits the grid; 1 for an all-zero group."""
    s = np.where(absmax_over_qmax == 0, 1.0, absmax_over_qmax)
    s16 = np.maximum(s, np.float16(6.2e-5)).astype(np.float16)  # never subnormal or zero
    return np.where(s16.astype(np.float64) < s, np.nextafter(s16, np.float16(np.inf)), s16).astype(np.float16)


def dequantize_groups(q_IxO, scale_GxO, xp=np):
    """float32 [I, O] = q * its group's scale (numpy or jax.numpy via `xp`)."""
    i, o = q_IxO.shape
    g = scale_GxO.shape[0]
    w = q_IxO.reshape(g, i // g, o).astype(xp.float32) * scale_GxO[:, None, :].astype(xp.float32)
    return w.reshape(i, o)


def pack_int4(q_IxO: np.ndarray) -> np.ndarray:
    """Two int4 values per byte along I: uint8 [I / 2, O], row 2r in the low nibble, 2r + 1 in the high."""
    if q_IxO.shape[0] % 2:
        raise ValueError(f"int4 packing needs an even number of rows, got {q_IxO.shape[0]}")
    if q_IxO.min(initial=0) < -8 or q_IxO.max(initial=0) > 7:
        raise ValueError("int4 values must lie in [-8, 7]")
    nibbles = (q_IxO.astype(np.int16) & 0xF).astype(np.uint8)
    return nibbles[0::2] | (nibbles[1::2] << 4)


def unpack_int4(packed, xp=np):
    """int8 [2 * R, O] from pack_int4's uint8 [R, O] (sign-extended nibbles)."""
    low = (packed & 0xF).astype(xp.int8)
    high = (packed >> 4).astype(xp.int8)
    low = xp.where(low > 7, low - 16, low).astype(xp.int8)
    high = xp.where(high > 7, high - 16, high).astype(xp.int8)
    r, o = packed.shape
    return xp.stack([low, high], axis=1).reshape(2 * r, o)


@flax.struct.dataclass
class QuantizedTensor:
    """An int8 weight kept int8 in memory: `q` has the float weight's shape, `scale` one float per output
    feature, shaped to broadcast against q (1 on the input axes).

    It stands where the float kernel stood in the params tree: gpt_jax.layers.matmul reads a kernel as
    `w.astype(compute_dtype)`, which here is q * scale inside the jitted program (flax's param shape
    check sees q's shape first), so no model code changes. Whether the dequantize fuses into the dot is
    the backend's choice: XLA's CPU backend hoists it out of the decode loop instead (measured in
    experiments/results/compression.md), so there int8 saves memory between calls, not decode time. Only 2-D views of the kernel that keep the input axis first are supported
    (the decode path's `kernel.reshape(D, -1)`).
    """

    q: jnp.ndarray
    scale: jnp.ndarray

    @property
    def shape(self):
        return self.q.shape

    @property
    def ndim(self):
        return self.q.ndim

    @property
    def dtype(self):
        return jnp.dtype(jnp.float32)  # what it stands for

    def astype(self, dtype):
        return self.q.astype(dtype) * self.scale.astype(dtype)

    def reshape(self, *shape):
        shape = tuple(shape[0]) if len(shape) == 1 and not isinstance(shape[0], int) else shape
        q = self.q.reshape(shape)
        n_in = sum(1 for s in self.scale.shape if s == 1)
        if q.shape[0] != self.q.shape[0] or n_in != 1:
            raise ValueError(f"QuantizedTensor of shape {self.q.shape} cannot be viewed as {shape}")
        return QuantizedTensor(q, self.scale.reshape((1,) + q.shape[1:]))


def int8_tensor(q_IxO, scale_1xO, shape: tuple[int, ...], n_in: int) -> QuantizedTensor:
    """The QuantizedTensor of a per-channel int8 matrix stored in the canonical view."""
    out_shape = shape[n_in:]
    assert math.prod(shape[:n_in]) == q_IxO.shape[0]
    return QuantizedTensor(
        jnp.asarray(q_IxO).reshape(shape), jnp.asarray(scale_1xO).reshape((1,) * n_in + tuple(out_shape))
    )
