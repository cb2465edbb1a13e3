"""Quantized weights: symmetric absmax int8 / int4 over groups of the input axis, int4 packing, and
`QuantizedTensor`, an int8 matrix that dequantizes inside the matmul that reads it.

Every matrix is handled in one canonical 2-D view W_IxO (I: the contracted input features, O: the
output features): a Dense kernel [in, *out], the attention out_kernel [H, K, D] (in: H*K) and the tied
embedding [V, D] (used by the head as x @ wte.T: in D, out V, so its view is the transpose).
"""

from __future__ import annotations

import math

import flax
import jax
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


# Rows of activations up to which a quantized matmul reads the int8 weight inside the dot (batch-1
# decoding); above it the weight is dequantized and the dot is a GEMM (measured at the GPT-2 shape: the
# fused int8 loop is 0.66x float32 at 4 rows, 0.55x at 16; experiments/results/compression.md).
FUSED_MAX_ROWS = 1


def materialized(x):
    """x, computed before the op that reads it: XLA's CPU backend would otherwise fuse x's producers (the
    layer norm, the embedding gather) into the fused int8 dot loop and recompute them for every output
    feature. A sum with zeros is exact and a reduce is never fused into its consumer (jax 0.10.2)."""
    return jnp.sum(jnp.stack([x, jnp.zeros_like(x)], -1), -1, dtype=x.dtype)


@flax.struct.dataclass
class QuantizedTensor:
    """A per-output-channel int8 weight kept int8 in memory, standing where the float param stood.

    `q` has the float param's shape (flax checks it) but holds the *output-major* bytes: each output
    feature's inputs are contiguous ([O, I] for a kernel [I, O]; the tables wte/wpe are [O, I] already).
    On XLA's CPU backend that layout lets a batch-1 matmul read the int8 weight inside the dot
    (`x @ q_OxI.T.astype(f32)` is one fused loop over the int8 bytes, 4x fewer bytes than float32),
    where the input-major layout or an einsum form materializes a float copy first. Measured at the GPT-2
    shape, batch-1 decode: 1.93x float32 tokens/s (experiments/results/compression.md). `scale` is float32
    [O]. gpt_jax.layers.matmul and take_rows hand a QuantizedTensor its `einsum` / `take_rows`.
    `act_bits=8`: W8A8, the activations quantized per row (token) to int8 too (int8 x int8 -> int32).
    """

    q: jnp.ndarray
    scale: jnp.ndarray
    n_in: int = flax.struct.field(pytree_node=False, default=1)  # leading input axes of the float param
    transposed: bool = flax.struct.field(pytree_node=False, default=False)  # the float param is [O, I]
    act_bits: int = flax.struct.field(pytree_node=False, default=0)
    # the stored q splits each output's inputs over two axes (the q/k/v kernels [D, H, K] viewed as [H*K, D])
    split_rows: bool = flax.struct.field(pytree_node=False, default=False)

    @property
    def shape(self):
        return self.q.shape

    @property
    def ndim(self):
        return self.q.ndim

    @property
    def dtype(self):
        return jnp.dtype(jnp.float32)  # what it stands for

    def _split(self, shape=None):
        """(input dims, output dims) of the float param."""
        shape = self.q.shape if shape is None else shape
        if self.transposed:
            return shape[1:], shape[:1]
        return shape[: self.n_in], shape[self.n_in :]

    def matrix_OxI(self):
        ins, outs = self._split()
        return self.q.reshape(math.prod(outs), math.prod(ins))

    def astype(self, dtype):
        """The float param (the whole weight dequantized)."""
        w_OxI = self.matrix_OxI().astype(dtype) * self.scale.astype(dtype)[:, None]
        if self.transposed:
            return w_OxI
        ins, outs = self._split()
        return w_OxI.T.reshape(tuple(ins) + tuple(outs))

    def reshape(self, *shape):
        """A view that keeps the input axes' size (the decode path's `kernel.reshape(D, -1)`)."""
        shape = tuple(shape[0]) if len(shape) == 1 and not isinstance(shape[0], int) else tuple(shape)
        ins, _ = self._split()
        n_in = math.prod(ins)
        if -1 in shape:
            known = math.prod(s for s in shape if s != -1)
            shape = tuple(self.q.size // known if s == -1 else s for s in shape)
        k = next((k for k in range(len(shape) + 1) if math.prod(shape[:k]) == n_in), None)
        if self.transposed or k is None or math.prod(shape) != self.q.size:
            raise ValueError(f"QuantizedTensor of shape {self.q.shape} cannot be viewed as {shape}")
        split = self.split_rows or (self.q.ndim > 2 and self.q.shape[-1] != n_in)
        return self.replace(q=self.q.reshape(shape), n_in=k, split_rows=split)

    def einsum(self, eqn: str, x):
        """jnp.einsum(eqn, x, float weight) in float32, reading the int8 weight (see the class doc)."""
        lhs, rs = eqn.replace(" ", "").split("->")
        xs, ws = lhs.split(",")
        ins, outs = self._split()
        n_out = len(outs)
        w_in, w_out = (ws[n_out:], ws[:n_out]) if self.transposed else (ws[: self.n_in], ws[self.n_in :])
        batch = xs.replace("...", "").translate({ord(c): None for c in w_in})
        x_lead = x.ndim - len(xs.replace("...", ""))  # dims under "..."
        # x as [M, I]: its batch dims first (in its own order), the contracted dims last, in the weight's order
        perm = list(range(x_lead)) + [x_lead + xs.replace("...", "").index(c) for c in batch + w_in]
        x_t = jnp.transpose(x, perm)
        lead_shape = x_t.shape[: x.ndim - len(w_in)]
        x_MxI = x_t.reshape(-1, math.prod(ins)).astype(jnp.float32)
        y_MxO = self._matmul(x_MxI)
        y = y_MxO.reshape(tuple(lead_shape) + tuple(outs))
        ell = "..." if "..." in xs else ""
        return jnp.einsum(f"{ell}{batch}{w_out}->{rs}", y)

    def _matmul(self, x_MxI):
        q_OxI = self.matrix_OxI()
        if self.act_bits:  # W8A8: per-row dynamic scales, int8 x int8 -> int32
            sx_Mx1 = jnp.maximum(jnp.abs(x_MxI).max(-1, keepdims=True), 1e-12) / 127.0
            xq_MxI = jnp.clip(jnp.round(x_MxI / sx_Mx1), -127, 127).astype(jnp.int8)
            if x_MxI.shape[0] <= FUSED_MAX_ROWS:
                q_OxI, xq_MxI = jax.lax.optimization_barrier((q_OxI, materialized(xq_MxI)))
            acc = jax.lax.dot_general(xq_MxI, q_OxI, (((1,), (1,)), ((), ())), preferred_element_type=jnp.int32)
            return acc.astype(jnp.float32) * sx_Mx1 * self.scale.astype(jnp.float32)
        if x_MxI.shape[0] > FUSED_MAX_ROWS:
            return x_MxI @ (q_OxI.astype(jnp.float32) * self.scale.astype(jnp.float32)[:, None]).T
        if self.split_rows or (self.q.ndim > 2 and self.q.shape[-1] != q_OxI.shape[1]):
            # q/k/v kernels s8[D, H, K]: XLA reads the [H*K, D] view inside the fused dot through i -> (i // K,
            # i % K), which LLVM does not see as contiguous: 8 single-byte loads per vector, ~9x slower than a
            # 2-D weight (a 2-D -> 2-D view is fine; experiments/results/compression.md). A real 2-D copy,
            # loop-invariant, so XLA makes it once per program, outside the decode loop.
            q_OxI = materialized(q_OxI)
        # Tie the weight to this call's activations: otherwise XLA hoists the (loop-invariant) int8 -> float
        # convert out of the decode loop and every step reads a float copy (measured: 0.85-0.97x float32).
        q_OxI, x_MxI = jax.lax.optimization_barrier((q_OxI, materialized(x_MxI)))
        return (x_MxI @ q_OxI.T.astype(jnp.float32)) * self.scale.astype(jnp.float32)

    def take_rows(self, ids):
        """Rows of a quantized table (wte/wpe: one scale per row), float32."""
        if not self.transposed:
            raise ValueError("take_rows reads a table quantized per row (wte/wpe)")
        return jnp.take(self.q, ids, axis=0).astype(jnp.float32) * jnp.take(self.scale, ids, axis=0)[..., None]


def int8_tensor(q_IxO, scale_1xO, shape: tuple[int, ...], n_in: int, transposed: bool = False, act_bits: int = 0):
    """The QuantizedTensor of a per-channel int8 matrix stored in the canonical [I, O] view."""
    q_OxI = np.ascontiguousarray(np.asarray(q_IxO).T)
    assert q_OxI.size == math.prod(shape)
    scale = jnp.asarray(np.asarray(scale_1xO, np.float32).reshape(-1))
    return QuantizedTensor(jnp.asarray(q_OxI.reshape(shape)), scale, n_in, transposed, act_bits)
