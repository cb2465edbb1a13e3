"""Fused attention kernels for accelerators: cuDNN (GPU) and splash attention (TPU, Pallas).

Both are causal self-attention kernels that take packed rows as segment ids, not a dense mask. The
model hands attention a dense mask_BxLxL (gpt_jax.masks), so `fused_attention` recovers the segment
ids from it (a new segment starts where a token cannot see the one before it) and checks that the
mask is exactly causal-within-segments. Rows that are not (prefix-LM, bidirectional, left-padded
prompts) take the caller's reference path through `lax.cond`: the kernels never change results.

Selected by `model.attention` (gpt_jax.attention.resolve_attention):
  cudnn             jax.nn.dot_product_attention(implementation='cudnn'), bf16/fp16 only; plain causal
                    rows use is_causal=True (cuDNN's fast causal path); packed rows pass the mask.
  splash            jax.experimental.pallas.ops.tpu.splash_attention, causal + segment ids; TPU only.
  splash_interpret  the same Pallas kernel in interpret mode: runs on CPU (slow; for tests/debugging).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

KERNELS = ("cudnn", "splash", "splash_interpret")
# splash tiles must be multiples of 128 lanes; the largest of these dividing L is used
SPLASH_BLOCKS = (512, 256, 128)
_BACKEND = {"cudnn": "gpu", "splash": "tpu"}
_FIX = {
    "cudnn": "set model.attention=auto (or einsum/dot_product) off GPU",
    "splash": "set model.attention=auto off TPU, or splash_interpret to run the kernel interpreted on CPU",
}


def check_kernel(name: str, backend: str, dtype) -> None:
    """One-line ValueError when kernel `name` cannot run on `backend` with compute dtype `dtype`."""
    want = _BACKEND.get(name)
    if want is not None and backend != want:
        raise ValueError(f"model.attention={name!r} needs a {want.upper()} but JAX runs on {backend}; {_FIX[name]}")
    if name == "cudnn" and jnp.dtype(dtype) not in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
        raise ValueError(
            f"model.attention='cudnn' needs bfloat16 compute, got model.dtype={jnp.dtype(dtype).name}; "
            "set model.dtype=bfloat16 or model.attention=dot_product"
        )


def segments_from_mask(mask_BxLxL: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(segment_ids_BxL int32 from 1, exact: bool scalar) with exact True iff mask_BxLxL is causal
    attention within contiguous segments, i.e. what the fused kernels compute."""
    b, l, _ = mask_BxLxL.shape
    sees_prev_BxL = jnp.diagonal(mask_BxLxL, offset=-1, axis1=1, axis2=2)  # [B, L-1]: token i sees i-1
    starts_BxL = jnp.concatenate([jnp.ones((b, 1), bool), ~sees_prev_BxL], axis=1)
    segment_BxL = jnp.cumsum(starts_BxL, axis=1, dtype=jnp.int32)
    causal_LxL = jnp.arange(l)[:, None] >= jnp.arange(l)[None, :]
    rebuilt_BxLxL = causal_LxL & (segment_BxL[:, :, None] == segment_BxL[:, None, :])
    return segment_BxL, jnp.all(rebuilt_BxLxL == mask_BxLxL)


def cudnn_attention(q_BxHxLxK, k_BxGxLxK, v_BxGxLxK, mask_BxLxL, plain, dtype, implementation="cudnn"):
    """jax.nn.dot_product_attention in bf16: is_causal=True without a mask where `plain` (every row is
    one causal segment), the dense mask otherwise. implementation='xla' runs the same calls on CPU."""
    q, k, v = (jnp.swapaxes(t, 1, 2).astype(dtype) for t in (q_BxHxLxK, k_BxGxLxK, v_BxGxLxK))
    sdpa = functools.partial(jax.nn.dot_product_attention, implementation=implementation)
    out_BxLxHxK = jax.lax.cond(
        plain,
        lambda: sdpa(q, k, v, is_causal=True),
        lambda: sdpa(q, k, v, mask=mask_BxLxL[:, None]),
    )
    return jnp.swapaxes(out_BxLxHxK, 1, 2).astype(jnp.float32)


def splash_block(length: int) -> int | None:
    """The splash tile for a sequence of `length`, or None when no tile divides it."""
    return next((blk for blk in SPLASH_BLOCKS if length % blk == 0), None)


@functools.lru_cache(maxsize=32)
def _splash_kernel(length: int, q_per_kv: int, block: int, interpret: bool):
    # lazy: Pallas TPU ops import only when splash is selected (not needed on CPU/GPU runs)
    from jax.experimental.pallas.ops.tpu import splash_attention as sa

    mask = sa.MultiHeadMask([sa.CausalMask((length, length))] * q_per_kv)
    sizes = sa.BlockSizes(
        block_q=block,
        block_kv=block,
        block_kv_compute=block,
        block_q_dkv=block,
        block_kv_dkv=block,
        block_kv_dkv_compute=block,
        block_q_dq=block,
        block_kv_dq=block,
    )
    with jax.ensure_compile_time_eval():  # concrete mask tables even when first built inside a trace (cached)
        kernel = sa.make_splash_mqa_single_device(mask, block_sizes=sizes, interpret=interpret)
    return kernel, sa.SegmentIds


def splash_attention(q_BxHxLxK, k_BxGxLxK, v_BxGxLxK, segment_BxL, dtype, interpret: bool = False):
    """Splash attention, causal within segments. Each kv group runs the MQA kernel over its H/G query
    heads (grouped-query attention without repeating keys). Needs L divisible by 128."""
    b, h, l, d = q_BxHxLxK.shape
    g = k_BxGxLxK.shape[1]
    block = splash_block(l)
    if block is None:
        raise ValueError(f"splash attention needs a length divisible by 128, got {l}; use model.attention=einsum")
    kernel, segment_ids = _splash_kernel(l, h // g, block, interpret)
    q_BxGxRxLxK = (q_BxHxLxK.reshape(b, g, h // g, l, d) * (d**-0.5)).astype(dtype)

    def one(q_RxLxK, k_LxK, v_LxK, segment_L):
        return kernel(q_RxLxK, k_LxK, v_LxK, segment_ids=segment_ids(segment_L, segment_L))

    per_group = jax.vmap(one, in_axes=(0, 0, 0, None))
    o_BxGxRxLxK = jax.vmap(per_group)(q_BxGxRxLxK, k_BxGxLxK.astype(dtype), v_BxGxLxK.astype(dtype), segment_BxL)
    return o_BxGxRxLxK.reshape(b, h, l, d).astype(jnp.float32)


def fused_attention(name: str, q_BxHxLxK, k_BxGxSxK, v_BxGxSxK, mask_BxLxS, dtype, reference: Callable):
    """Kernel `name` where the mask is causal-within-segments, else reference(q, k, v, mask, dtype).

    Shapes a kernel cannot take (keys != queries, e.g. with a kv prefix; splash lengths not divisible by
    128; cuDNN head dims not a multiple of 8 or over 128) go to the reference statically.
    """
    args = (q_BxHxLxK, k_BxGxSxK, v_BxGxSxK, mask_BxLxS, dtype)
    l, s, d = q_BxHxLxK.shape[2], k_BxGxSxK.shape[2], q_BxHxLxK.shape[3]
    fits = (d % 8 == 0 and d <= 128) if name == "cudnn" else splash_block(l) is not None
    if l != s or not fits:
        return reference(*args)
    segment_BxL, exact = segments_from_mask(mask_BxLxS)
    if name == "cudnn":  # any mask is right for cuDNN's masked call; is_causal only for one segment per row
        plain = exact & jnp.all(segment_BxL == 1)
        return cudnn_attention(q_BxHxLxK, k_BxGxSxK, v_BxGxSxK, mask_BxLxS, plain, dtype)
    interpret = name == "splash_interpret"
    return jax.lax.cond(
        exact,
        lambda: splash_attention(q_BxHxLxK, k_BxGxSxK, v_BxGxSxK, segment_BxL, dtype, interpret),
        lambda: reference(*args),
    )
