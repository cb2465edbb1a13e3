"""Attention masks from batch fields, built inside the jitted step (never shipped from the host).

Batch fields (all optional; absent = plain causal LM over unpadded rows):
  segment_ids_BxL  int32: packed examples; a token attends only within its own segment. 0 = padding.
  prefix_len_B     int32: tokens [0, prefix_len) see each other both ways (prefix LM; = L gives MLM's
                   fully bidirectional attention); tokens after the prefix are causal.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def attention_mask(batch, length: int) -> jax.Array:
    """mask_BxLxL (True = may attend) for a batch dict with `inputs` [B, L] and the fields above."""
    b = batch["inputs"].shape[0]
    q_L1 = jnp.arange(length)[:, None]
    k_1L = jnp.arange(length)[None, :]
    mask_BxLxL = jnp.broadcast_to(k_1L <= q_L1, (b, length, length))
    prefix_B = batch.get("prefix_len")
    if prefix_B is not None:
        mask_BxLxL = mask_BxLxL | (k_1L[None] < prefix_B[:, None, None])
    segment_BxL = batch.get("segment_ids")
    if segment_BxL is not None:
        mask_BxLxL = mask_BxLxL & (segment_BxL[:, :, None] == segment_BxL[:, None, :])
    return mask_BxLxL


def needs_mask(batch) -> bool:
    """Whether the batch asks for more than the model's default causal mask."""
    return "segment_ids" in batch or "prefix_len" in batch
