"""Documents -> fixed-length rows with segment ids and positions (grain first-fit packing).

A record's ids (a document, or a stretch of a long one, with the end-of-text id the writer put after each
document) become (inputs, targets) pieces of at most `block_size` tokens (targets = inputs shifted by one, so no token predicts across a cut); pieces are
packed first-fit into rows. The batch fields follow gpt_jax.masks: `segment_ids` (1, 2, ... per piece in
a row, 0 = padding; attention stays within a piece), `positions` (restarting at 0 for each piece) and
`weights` (0 on padding, so the loss ignores it).
"""

from __future__ import annotations

import math

import grain
import grain.experimental as grain_exp
import numpy as np

from gpt_jax.data.shards import decode_record


class DocumentPieces(grain_exp.FlatMapTransform):
    """One record -> its {inputs, targets} pieces of at most `block_size` tokens."""

    def __init__(self, block_size: int, dtype: str, max_record_tokens: int):
        self.block_size, self.dtype = block_size, dtype
        self.max_fan_out = math.ceil((max_record_tokens + 1) / block_size) + 1

    def flat_map(self, record: bytes) -> list[dict[str, np.ndarray]]:
        ids_N = decode_record(record, self.dtype)
        # Piece i covers tokens [i*L, (i+1)*L]: consecutive pieces share one token, so every token
        # after the document's first is a target exactly once.
        n, pieces = ids_N.size, []
        for s in range(0, n - 1, self.block_size):
            e = min(s + self.block_size, n - 1)  # inputs [s, e), targets [s+1, e+1): the same length
            pieces.append({"inputs": ids_N[s:e], "targets": ids_N[s + 1 : e + 1]})
        return pieces


def pack_rows(
    pieces: grain.IterDataset, block_size: int, num_bins: int, seed: int, shuffle_bins: bool
) -> grain.IterDataset:
    """{inputs, targets} pieces -> packed rows of exactly `block_size` (grain's first-fit packing)."""
    return grain_exp.FirstFitPackIterDataset(
        pieces,
        length_struct={"inputs": block_size, "targets": block_size},
        num_packing_bins=num_bins,
        seed=seed,
        shuffle_bins=shuffle_bins,
    )


def as_lm_batch(packed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """grain's packed fields -> the trainer's batch fields (int32 inputs/targets/segment_ids/positions,
    float32 weights)."""
    segment_BxL = packed["inputs_segment_ids"].astype(np.int32)
    return {
        "inputs": packed["inputs"].astype(np.int32),
        "targets": packed["targets"].astype(np.int32),
        "segment_ids": segment_BxL,
        "positions": packed["inputs_positions"].astype(np.int32),
        "weights": (segment_BxL > 0).astype(np.float32),
    }
