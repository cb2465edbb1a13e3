"""The grain reader: token shards -> shuffled, packed LM batches, with a checkpointable position.

Train stream: `MapDataset` over the shards' records -> global shuffle (reseeded each epoch) -> this
process's slice -> document pieces -> first-fit packing -> batches of B_local rows -> optional worker
processes. Only the records a batch needs are read, so memory stays flat however large the corpus.

Unlike the random-window sampler, a grain stream is sequential: its position is the iterator state,
saved beside the train state in each checkpoint (gpt_jax.data.iterator_state) so a resumed run
continues mid-epoch with exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import dataclasses
import json

import grain
import numpy as np
from absl import flags

from gpt_jax.data import packing
from gpt_jax.data.shards import ShardMeta


@dataclasses.dataclass(frozen=True)
class StreamConfig:
    batch_size: int  # global rows per step
    block_size: int
    seed: int
    workers: int = 0  # grain worker processes (0: read in this process)
    packing_bins: int = 64  # rows packed at once: more bins, less padding


def _dataset(meta: ShardMeta, split: str, cfg: StreamConfig, process_index: int, process_count: int, *, train: bool):
    if cfg.batch_size % process_count:
        raise ValueError(f"Global batch_size {cfg.batch_size} is not divisible by process_count {process_count}.")
    records = grain.MapDataset.source(grain.sources.ArrayRecordDataSource(meta.paths(split)))
    if train:
        records = records.shuffle(seed=cfg.seed)
    records = records[process_index::process_count].repeat(None)  # epochs reshuffle (repeat reseeds)
    pieces = grain.experimental.FlatMapIterDataset(
        records.to_iter_dataset(),
        packing.DocumentPieces(cfg.block_size, meta.dtype, meta.max_record_tokens),
    )
    rows = packing.pack_rows(pieces, cfg.block_size, max(cfg.packing_bins, 1), cfg.seed, shuffle_bins=train)
    batches = rows.batch(cfg.batch_size // process_count, drop_remainder=True).map(packing.as_lm_batch)
    if train and cfg.workers > 0:
        if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; outside an absl app (tests) none parsed
            flags.FLAGS.mark_as_parsed()
        batches = batches.mp_prefetch(grain.MultiprocessingOptions(num_workers=cfg.workers))
    return batches


class PackedStream:
    """Train batches of a token-shard corpus, step by step; `get_state`/`set_state` carry its position.

    `batches(step, k)` must follow on from the previous call (or repeat the previous call's start step,
    as the trainer's shape probe at step 0 does): a stream cannot jump.
    """

    def __init__(self, meta: ShardMeta, cfg: StreamConfig, *, process_index: int = 0, process_count: int = 1):
        self.where = (process_index, process_count)
        self._dataset = _dataset(meta, "train", cfg, process_index, process_count, train=True)
        self._it = iter(self._dataset)
        self._step = 0  # the step of the next batch
        self._marks = {0: self._it.get_state()}  # step -> iterator state at that step (the last call's start)

    def batches(self, step: int, k: int, *, process_index: int = 0, process_count: int = 1) -> dict[str, np.ndarray]:
        """Steps [step, step + k): inputs/targets/segment_ids/positions int32[k, B_local, L], weights float32."""
        if (process_index, process_count) != self.where:
            raise ValueError(f"this stream reads for process {self.where}, not {(process_index, process_count)}")
        if step != self._step:
            if step not in self._marks:
                raise ValueError(
                    f"the grain stream is at step {self._step} and cannot jump to step {step}; "
                    "restore its state from the checkpoint of that step"
                )
            self._it.set_state(self._marks[step])
        self._marks = {step: self._it.get_state()}
        rows = [next(self._it) for _ in range(k)]
        self._step = step + k
        return {key: np.stack([r[key] for r in rows]) for key in rows[0]}

    def get_state(self) -> bytes:
        """The position (next step and grain's iterator state) as JSON bytes."""
        return json.dumps({"step": self._step, "iterator": self._it.get_state()}).encode("utf-8")

    def set_state(self, state: bytes) -> None:
        data = json.loads(state)
        self._it.set_state(data["iterator"])
        self._step = int(data["step"])
        self._marks = {self._step: data["iterator"]}


def eval_batches(
    meta: ShardMeta, cfg: StreamConfig, num_batches: int, *, process_index: int = 0, process_count: int = 1
) -> dict[str, np.ndarray]:
    """The first `num_batches` packed batches of the validation split, in order: the same every eval."""
    it = iter(_dataset(meta, "validation", cfg, process_index, process_count, train=False))
    rows = [next(it) for _ in range(num_batches)]
    return {key: np.stack([r[key] for r in rows]) for key in rows[0]}
