"""`data.pipeline='grain'` for language modelling: tokenizer + token shards + packed streams.

The corpus is streamed document by document (gpt_jax.data.documents), tokenized once into ArrayRecord
shards (gpt_jax.data.shards) under `data.shards_dir` (default <tfds cache>/token_shards), keyed by the
corpus and the tokenizer, and read back by grain (gpt_jax.data.grain_pipeline). The tokenizer is the
workdir's (resume), else `data.tokenizer_path`'s files, else learned from the first
`data.tokenizer_sample_chars` characters of the train split.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import tempfile
from collections.abc import Iterator

import jax
import ml_collections
import numpy as np

from gpt_jax import sharding
from gpt_jax.data import documents, grain_pipeline, shards, sources
from gpt_jax.data.tokenizers import Tokenizer, build_tokenizer

log = logging.getLogger(__name__)

# Learned from a sample, a char/word vocabulary would miss symbols that first appear later in the stream.
STREAMABLE_TOKENIZERS = ("byte", "bpe", "sentencepiece")
SHARDS_SUBDIR = "token_shards"


@dataclasses.dataclass(frozen=True)
class GrainData:
    tokenizer: Tokenizer
    meta: shards.ShardMeta

    def stream_config(self, config: ml_collections.ConfigDict, block_size: int) -> grain_pipeline.StreamConfig:
        return grain_pipeline.StreamConfig(
            batch_size=config.train.batch_size,
            block_size=block_size,
            seed=config.seed,
            workers=config.data.grain_workers,
            packing_bins=config.data.packing_bins,
        )


def _check(d: ml_collections.ConfigDict) -> None:
    if d.tokenizer not in STREAMABLE_TOKENIZERS:
        raise ValueError(
            f"data.pipeline='grain' streams a corpus it never holds whole, so data.tokenizer={d.tokenizer!r} "
            f"(learned from a sample) could miss symbols; use one of {', '.join(STREAMABLE_TOKENIZERS)}."
        )


def choose_tokenizer(config: ml_collections.ConfigDict, tokenizer: Tokenizer | None) -> Tokenizer:
    """The workdir's tokenizer on resume, else loaded from data.tokenizer_path, else learned from a sample."""
    d = config.data
    _check(d)
    if tokenizer is not None:
        if tokenizer.name != d.tokenizer:
            raise ValueError(
                f"Given tokenizer is {tokenizer.name!r} but data.tokenizer is {d.tokenizer!r}; "
                "a resumed run must keep the tokenizer it was trained with."
            )
        return tokenizer
    sample = ""
    if not d.get("tokenizer_path") and d.tokenizer != "byte":
        sample = documents.sample_text(
            d.dataset, d.tokenizer_sample_chars, manual_dir=d.manual_dir, data_dir=d.tfds_dir
        )
    return build_tokenizer(d.tokenizer, sample, vocab_size=d.get("vocab_size"), path=d.get("tokenizer_path"))


def shards_root(d: ml_collections.ConfigDict) -> pathlib.Path:
    if d.get("shards_dir"):
        return pathlib.Path(d.shards_dir).expanduser()
    return sources.resolve_tfds_dir(d.tfds_dir) / SHARDS_SUBDIR


def tokenizer_fingerprint(tokenizer: Tokenizer) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save(tmp)
        return documents.short_hash(*(p.read_text(encoding="utf-8") for p in sorted(pathlib.Path(tmp).iterdir())))


def _token_docs(tokenizer: Tokenizer, texts: Iterator[str]) -> Iterator[np.ndarray]:
    for text in texts:
        if text:
            yield tokenizer.encode(text)


def prepare(config: ml_collections.ConfigDict, tokenizer: Tokenizer | None = None) -> GrainData:
    """Tokenizer and token shards for `config` (written by process 0 on first use, then reused)."""
    d = config.data
    tokenizer = choose_tokenizer(config, tokenizer)
    kwargs = dict(manual_dir=d.manual_dir, data_dir=d.tfds_dir)
    key = documents.short_hash(
        documents.source_id(d.dataset, **kwargs), tokenizer_fingerprint(tokenizer), shards.FORMAT
    )
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in d.dataset.split("/")[-1])[:60]
    directory = shards_root(d) / f"{name}-{key}"
    if jax.process_index() == 0 and shards.read_meta(directory) is None:
        log.info("tokenizing %s into token shards at %s (once)", d.dataset, directory)
        split_docs = {
            split: _token_docs(tokenizer, documents.stream_documents(d.dataset, split, **kwargs))
            for split in sources.SPLITS
        }
        shards.prepare_shards(directory, split_docs, vocab_size=tokenizer.vocab_size, eos_id=tokenizer.eos_id)
    sharding.sync_processes("token shards")
    meta = shards.read_meta(directory)
    if meta is None:
        raise FileNotFoundError(f"no complete token shards at {directory}; process 0 should have written them")
    log.info("token shards %s: %s", directory, json.dumps({s: v["tokens"] for s, v in meta.splits.items()}))
    return GrainData(tokenizer, meta)


class GrainLMData:
    """What the LM task reads on the grain pipeline: `batches(step, k, ...)` (the train stream, also the
    task's `data_iterator`) and `eval_batches(process_index, process_count)`."""

    def __init__(self, data: GrainData, config: ml_collections.ConfigDict, block_size: int):
        self.meta, self.cfg = data.meta, data.stream_config(config, block_size)
        self.num_eval = config.train.eval_batches
        self.stream = grain_pipeline.PackedStream(
            data.meta, self.cfg, process_index=jax.process_index(), process_count=jax.process_count()
        )

    def eval_batches(self, process_index: int, process_count: int) -> dict[str, np.ndarray]:
        return grain_pipeline.eval_batches(
            self.meta, self.cfg, self.num_eval, process_index=process_index, process_count=process_count
        )
