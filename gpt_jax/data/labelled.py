"""Labelled text (sentence classification) through the same TFDS layer as the text corpora.

A `GeneratorBasedBuilder` of ours prepares each dataset once to array_record under the TFDS dir and
reads it back with `as_data_source()`: no TensorFlow. The manual dir and TFDS dir resolve exactly as
for text corpora (`sources.choose_manual_dir` / `sources.resolve_tfds_dir`).

  splits, label_names = load_labelled("sst2")      # {'train': (texts, labels_N), ...}, ['negative', 'positive']
  batch = encode_labelled(tokenizer, *splits["validation"], max_len=64)

To add a dataset: one entry in `LABELLED` (split -> TSV path under the manual dir, the label map).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
from collections.abc import Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds

import gpt_jax.data.sources as sources
import gpt_jax.data.text_builder as text_builder
from gpt_jax.data.tokenizers import Tokenizer

# Bump when the stored layout changes, so old caches are not reused silently.
_VERSION = tfds.core.Version("1.0.0")

# Rows per stored record. TFDS decodes one record in ~0.1 ms, so one record per row would take
# ~10 s to read SST-2 train back; blocks of rows take milliseconds (as text_builder's chunks).
ROWS_PER_RECORD = 1024


@dataclasses.dataclass(frozen=True)
class LabelledDataset:
    files: dict[str, str]  # split -> TSV under the manual dir (header row; label, text)
    label_names: tuple[str, ...]  # class id -> name
    labels: tuple[str, ...]  # label as written in the file, for class id 0, 1, ...
    description: str

    def label_map(self) -> dict[str, str]:
        return dict(zip(self.labels, self.label_names))


LABELLED: dict[str, LabelledDataset] = {
    "sst2": LabelledDataset(
        files={"train": "sst2/train.tsv", "validation": "sst2/dev.tsv", "test": "sst2/test.tsv"},
        label_names=("negative", "positive"),
        labels=("0", "1"),
        description="SST-2 (GLUE binary sentiment): 67,349 / 872 / 1,821 rows; test labels included.",
    ),
}


def known_labelled() -> list[str]:
    return sorted(LABELLED)


def _check_known(dataset: str) -> LabelledDataset:
    if dataset not in LABELLED:
        raise ValueError(
            f"Unknown labelled dataset {dataset!r}: known ones are {', '.join(known_labelled())}; "
            "add an entry to gpt_jax.data.labelled.LABELLED for a new one."
        )
    return LABELLED[dataset]


def read_labelled_tsv(path: pathlib.Path, spec: LabelledDataset) -> Iterator[tuple[str, int]]:
    """(text, class id) per row; a label outside the label map is an error naming file:line."""
    ids = {label: i for i, label in enumerate(spec.labels)}
    for line, (label, text) in text_builder.iter_tsv_rows(path, num_fields=2):
        if label not in ids:
            raise ValueError(
                f"{path}:{line}: label {label!r} is not in the label map {spec.label_map()}; "
                "fix the row or extend LABELLED's labels/label_names."
            )
        yield text, ids[label]


def sources_md5(manual_dir: pathlib.Path, spec: LabelledDataset) -> str:
    # One digest over every split's file: any edited file re-prepares the cache.
    digests = [f"{split}:{text_builder.file_md5(manual_dir / rel)}" for split, rel in sorted(spec.files.items())]
    return hashlib.md5(" ".join(digests).encode()).hexdigest()


@dataclasses.dataclass(eq=False)
class LabelledConfig(tfds.core.BuilderConfig):
    dataset: LabelledDataset | None = None


class GptJaxLabelled(tfds.core.GeneratorBasedBuilder):
    """Local labelled TSVs -> one split per file. A stored example is a block of consecutive rows:
    {index: block number, text: [str], label: [class id]} (see ROWS_PER_RECORD)."""

    VERSION = _VERSION
    RELEASE_NOTES = {"1.0.0": "Blocks of ROWS_PER_RECORD rows (text, label) with a block `index`, file order."}
    BUILDER_CONFIGS = [
        LabelledConfig(name=name, description=spec.description, dataset=spec) for name, spec in LABELLED.items()
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Pass the folder holding the datasets (e.g. shared/data) as the manual dir; "
        "see gpt_jax.data.sources.choose_manual_dir."
    )

    @property
    def spec(self) -> LabelledDataset:
        assert isinstance(self.builder_config, LabelledConfig) and self.builder_config.dataset is not None
        return self.builder_config.dataset

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    # Examples are stored shuffled by key; `index` restores file order.
                    "index": tfds.features.Scalar(dtype=np.int32),
                    "text": tfds.features.Sequence(tfds.features.Text()),
                    "label": tfds.features.Sequence(tfds.features.ClassLabel(names=list(self.spec.label_names))),
                }
            ),
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        manual_dir = pathlib.Path(dl_manager.manual_dir)
        # Parsed here, before anything is written: a bad row fails fast with its file:line.
        rows = {split: list(read_labelled_tsv(manual_dir / rel, self.spec)) for split, rel in self.spec.files.items()}
        self.info.metadata.update(
            source_files=dict(self.spec.files),
            source_md5=sources_md5(manual_dir, self.spec),
            num_rows={split: len(r) for split, r in rows.items()},
        )
        return {split: self._generate_examples(r) for split, r in rows.items()}

    def _generate_examples(self, rows: list[tuple[str, int]]):
        for index, start in enumerate(range(0, len(rows), ROWS_PER_RECORD)):
            texts, labels = zip(*rows[start : start + ROWS_PER_RECORD])
            yield index, {"index": index, "text": list(texts), "label": list(labels)}


def load_labelled(
    dataset: str,
    *,
    manual_dir: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
) -> tuple[dict[str, tuple[list[str], np.ndarray]], list[str]]:
    """({split: (texts, labels int32[N])} in file order, label_names), prepared once under the TFDS dir."""
    spec = _check_known(dataset)
    base = sources.require_manual_files(dataset, spec.files.values(), manual_dir)
    tfds_dir = sources.resolve_tfds_dir(data_dir)
    builder = sources.prepare_builder(GptJaxLabelled, dataset, tfds_dir, base, sources_md5(base, spec))
    return {split: _read_split(builder, split) for split in spec.files}, list(spec.label_names)


def _read_split(builder: GptJaxLabelled, split: str) -> tuple[list[str], np.ndarray]:
    source = builder.as_data_source(split=split)
    blocks = [source[i] for i in range(len(source))]
    blocks.sort(key=lambda ex: int(ex["index"]))
    texts = [text_builder._as_str(t) for ex in blocks for t in ex["text"]]
    labels = [np.asarray(ex["label"], dtype=np.int32).reshape(-1) for ex in blocks]
    return texts, np.concatenate(labels) if labels else np.zeros(0, np.int32)


def encode_labelled(
    tokenizer: Tokenizer, texts: Sequence[str], labels: Sequence[int] | np.ndarray, max_len: int, *, pad_id: int = 0
) -> dict[str, np.ndarray]:
    """{'inputs': int32[N, max_len] right-padded with `pad_id`, 'lengths': int32[N], 'labels': int32[N]}.

    Longer texts keep their FIRST max_len tokens (lengths = min(len, max_len)); an empty encoding
    is an error, since a classifier pools over at least one real token.
    """
    if max_len < 1:
        raise ValueError(f"max_len={max_len} must be >= 1 (set config.task.max_len).")
    labels_N = np.asarray(labels, dtype=np.int32)
    if labels_N.shape != (len(texts),):
        raise ValueError(f"{len(texts)} texts but labels have shape {labels_N.shape}; pass one label per text.")
    inputs_NxL = np.full((len(texts), max_len), pad_id, dtype=np.int32)
    lengths_N = np.zeros(len(texts), dtype=np.int32)
    for i, text in enumerate(texts):
        ids = tokenizer.encode(text)[:max_len]
        if ids.size == 0:
            raise ValueError(f"text {i} ({text!r}) encodes to no tokens; drop empty texts before encoding.")
        inputs_NxL[i, : ids.size] = ids
        lengths_N[i] = ids.size
    return {"inputs": inputs_NxL, "lengths": lengths_N, "labels": labels_N}
