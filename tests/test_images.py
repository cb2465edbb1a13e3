"""The staged digit images through our TFDS builder: the 8,000 / 2,000 split of MNIST's test file."""

from __future__ import annotations

import numpy as np
import pytest

from gpt_jax.data import image_builder, images
from gpt_jax.data.sources import choose_manual_dir


@pytest.fixture(scope="module")
def mnist(tfds_cache):
    return images.load_image_splits("mnist_split", data_dir=tfds_cache)


def test_mnist_split_is_8000_train_2000_held_out_disjoint_and_fixed(mnist):
    train, held = mnist["train"], mnist["validation"]
    assert train["images"].shape == (8000, 28, 28) and held["images"].shape == (2000, 28, 28)
    assert train["images"].dtype == np.float32 and train["images"].min() >= 0.0 and train["images"].max() == 1.0
    # The split is the documented permutation of the source rows (so it cannot drift between versions).
    raw = np.load(choose_manual_dir()[0] / "mnist" / "mnist_test.npz")
    train_idx, held_idx = image_builder.split_indices(10000, 8000)
    assert not set(train_idx) & set(held_idx)
    np.testing.assert_array_equal(held["labels"], raw["labels"][held_idx])
    np.testing.assert_array_equal(held["images"], raw["images"][held_idx] / np.float32(255))
    assert held_idx[:5].tolist() == [3, 6, 8, 9, 18]  # pinned: a changed SPLIT_SEED or rule fails here
    assert set(np.unique(held["labels"])) == set(range(10))


def test_second_load_reads_the_prepared_cache(mnist, tfds_cache, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("prepared again")

    monkeypatch.setattr(image_builder.GptJaxImages, "download_and_prepare", fail)
    again = images.load_image_splits("mnist_split", data_dir=tfds_cache)
    np.testing.assert_array_equal(again["validation"]["labels"], mnist["validation"]["labels"])


def test_sklearn_digits_scaled_to_unit_range(tfds_cache):
    d = images.load_image_splits("sklearn_digits", data_dir=tfds_cache)
    assert d["train"]["images"].shape == (1437, 8, 8) and d["validation"]["images"].shape == (360, 8, 8)
    assert d["train"]["images"].max() == 1.0  # source values 0..16


def test_unknown_set_and_broken_file_are_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown image dataset 'nope'.*mnist_split"):
        images.load_image_splits("nope")
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / "mnist_test.npz").write_bytes(b"not an npz")
    with pytest.raises(ValueError, match="is not an npz with 'images' and 'labels'.*restore the staged file"):
        images.load_image_splits("mnist_split", manual_dir=tmp_path, data_dir=tmp_path / "tfds")
    with pytest.raises(FileNotFoundError, match="file not found"):
        images.load_image_splits("sklearn_digits", manual_dir=tmp_path, data_dir=tmp_path / "tfds")
