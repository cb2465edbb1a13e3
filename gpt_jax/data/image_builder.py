"""Project-defined TFDS builder for the staged digit images (image + label + caption), no TensorFlow.

Like gpt_jax.data.text_builder: prepared once to array_record under the TFDS dir, read back with
`as_data_source()`. Images are stored as uint8 tensors (TFDS's Image feature needs TensorFlow to encode).

Splits (written down once, here): only MNIST's 10,000-image TEST split is staged, so `mnist_split` cuts
it into 8,000 train / 2,000 held out by a fixed permutation (`np.random.default_rng(0).permutation`):
the MNIST test file's first half (Census employees) and second half (students) are mixed into both
parts. Accuracy on the 2,000 is "held-out accuracy on our split of the MNIST test set", never "MNIST test
accuracy". sklearn_digits (1,797 8x8 images) is cut the same way, 1,437 / 360 (80/20).
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from gpt_jax.data.text_builder import file_md5

_VERSION = tfds.core.Version("1.0.0")
SPLIT_SEED = 0

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@dataclasses.dataclass(eq=False)
class ImageSetConfig(tfds.core.BuilderConfig):
    relative_path: str = ""
    num_train: int = 0  # examples in train after the seeded permutation; the rest are validation
    height: int = 0
    width: int = 0
    max_value: int = 255  # the largest pixel value of the source (sklearn digits: 16)


IMAGE_SETS: dict[str, ImageSetConfig] = {
    c.name: c
    for c in (
        ImageSetConfig(
            name="mnist_split",
            description="MNIST's 10,000-image test split (the only one staged) cut 8,000 train / 2,000 held out.",
            relative_path="mnist/mnist_test.npz",
            num_train=8000,
            height=28,
            width=28,
        ),
        ImageSetConfig(
            name="sklearn_digits",
            description="scikit-learn's 1,797 8x8 digits (values 0..16) cut 1,437 train / 360 held out.",
            relative_path="sklearn_digits/digits.npz",
            num_train=1437,
            height=8,
            width=8,
            max_value=16,
        ),
    )
}


def split_indices(num_examples: int, num_train: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices) of the source file: a fixed permutation, cut at num_train."""
    order = np.random.default_rng(SPLIT_SEED).permutation(num_examples)
    return np.sort(order[:num_train]), np.sort(order[num_train:])


def read_npz(path: pathlib.Path, cfg: ImageSetConfig) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, H, W], labels int32 [N]) of a staged npz, checked (a wrong file is a one-line error)."""
    try:
        with np.load(path) as z:
            images, labels = np.asarray(z["images"]), np.asarray(z["labels"])
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(
            f"{path} is not an npz with 'images' and 'labels' ({type(e).__name__}: {e}); restore the staged file."
        ) from None
    if images.shape[1:] != (cfg.height, cfg.width) or len(images) != len(labels) or len(images) <= cfg.num_train:
        raise ValueError(
            f"{path} holds images {images.shape} and labels {labels.shape}; expected more than {cfg.num_train} "
            f"images of {cfg.height}x{cfg.width} with one label each; restore the staged file."
        )
    return images.astype(np.uint8), labels.astype(np.int32)


class GptJaxImages(tfds.core.GeneratorBasedBuilder):
    """Local digit images -> `train` / `validation` splits of {index, image, label}."""

    VERSION = _VERSION
    RELEASE_NOTES = {"1.0.0": "uint8 images, int32 labels; seeded-permutation split (SPLIT_SEED=0)."}
    BUILDER_CONFIGS = list(IMAGE_SETS.values())
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Pass the folder holding mnist/ and sklearn_digits/ (e.g. shared/data)."

    @property
    def image_config(self) -> ImageSetConfig:
        assert isinstance(self.builder_config, ImageSetConfig)
        return self.builder_config

    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.image_config
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "index": tfds.features.Scalar(dtype=np.int32),  # row in the source file
                    "image": tfds.features.Tensor(shape=(cfg.height, cfg.width), dtype=np.uint8),
                    "label": tfds.features.Scalar(dtype=np.int32),
                }
            ),
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        cfg = self.image_config
        path = pathlib.Path(dl_manager.manual_dir) / cfg.relative_path
        images, labels = read_npz(path, cfg)
        train, validation = split_indices(len(images), cfg.num_train)
        self.info.metadata.update(source_file=cfg.relative_path, source_md5=file_md5(path), split_seed=SPLIT_SEED)
        return {
            "train": self._generate_examples(images, labels, train),
            "validation": self._generate_examples(images, labels, validation),
        }

    def _generate_examples(self, images, labels, indices) -> Iterator[tuple[int, dict]]:
        for i in indices:
            yield int(i), {"index": int(i), "image": images[i], "label": int(labels[i])}


def read_split(builder: GptJaxImages) -> dict[str, dict[str, np.ndarray]]:
    """{split: {'images': uint8 [N, H, W], 'labels': int32 [N], 'index': int32 [N]}} in source-file order."""
    out = {}
    for split in ("train", "validation"):
        source = builder.as_data_source(split=split)
        rows = sorted((source[i] for i in range(len(source))), key=lambda r: int(r["index"]))
        out[split] = {
            "images": np.stack([np.asarray(r["image"], np.uint8) for r in rows]),
            "labels": np.array([int(r["label"]) for r in rows], np.int32),
            "index": np.array([int(r["index"]) for r in rows], np.int32),
        }
    return out
