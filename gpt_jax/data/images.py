"""Digit images for the multimodal and adversarial runs: {split: images, labels}, local or TFDS.

`load_image_splits("mnist_split")` reads the staged MNIST test file through our TFDS builder (split
8,000 / 2,000, see gpt_jax.data.image_builder); `"tfds:mnist"` reads TFDS's own MNIST (train / test;
needs internet once, then its cache). Every image comes back as float32 in [0, 1], [N, H, W].
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow_datasets as tfds

from gpt_jax.data import image_builder
from gpt_jax.data.sources import TFDS_PREFIX, prepare_builder, require_manual_files, resolve_tfds_dir


def known_image_sets() -> list[str]:
    return sorted(image_builder.IMAGE_SETS) + [f"{TFDS_PREFIX}mnist"]


def load_image_splits(
    dataset: str, *, manual_dir: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None
) -> dict[str, dict[str, np.ndarray]]:
    """{'train'|'validation': {'images': float32 [N, H, W] in [0, 1], 'labels': int32 [N]}}."""
    if dataset.startswith(TFDS_PREFIX):
        return _load_tfds(dataset[len(TFDS_PREFIX) :], resolve_tfds_dir(data_dir))
    cfg = image_builder.IMAGE_SETS.get(dataset)
    if cfg is None:
        raise ValueError(f"unknown image dataset {dataset!r}; known: {', '.join(known_image_sets())}")
    base = require_manual_files(dataset, [cfg.relative_path], manual_dir)
    md5 = image_builder.file_md5(base / cfg.relative_path)
    builder = prepare_builder(image_builder.GptJaxImages, dataset, resolve_tfds_dir(data_dir), base, md5)
    return {
        split: {"images": (d["images"].astype(np.float32) / cfg.max_value), "labels": d["labels"]}
        for split, d in image_builder.read_split(builder).items()
    }


def _load_tfds(name: str, data_dir) -> dict[str, dict[str, np.ndarray]]:
    """TFDS's MNIST-like sets (image [H, W, 1] uint8, label): train -> train, test -> validation."""
    builder = tfds.builder(name, data_dir=str(data_dir))
    builder.download_and_prepare(file_format="array_record")
    out = {}
    for ours, theirs in (("train", "train"), ("validation", "test")):
        source = builder.as_data_source(split=theirs)
        rows = [source[i] for i in range(len(source))]
        images = np.stack([np.asarray(r["image"], np.float32)[..., 0] / 255.0 for r in rows])
        out[ours] = {"images": images, "labels": np.array([int(r["label"]) for r in rows], np.int32)}
    return out
