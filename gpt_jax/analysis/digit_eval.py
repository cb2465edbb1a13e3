"""Judging generated digits without the GAN (issue 19): a small CNN classifier trained by us, with a fixed
recipe, on the training split; its penultimate features give a Fréchet distance (as FID does with
Inception), its probabilities the share of confident samples and the entropy of the class histogram.

`load_or_train(dataset, cache_dir)` trains once and caches the params (classifier.msgpack +
classifier.json) in `cache_dir`; `score(...)` gives the numbers for any set of images in [0, 1].
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import time

import flax.linen as nn
import jax
import numpy as np
import optax
from flax import serialization

from gpt_jax.data.images import load_image_splits

RECIPE_VERSION = 1  # bump when the recipe below changes: a cached classifier of another recipe is retrained


@dataclasses.dataclass(frozen=True)
class Recipe:
    widths: tuple[int, int] = (32, 64)
    features: int = 128  # the penultimate layer: what the Fréchet distance compares
    epochs: int = 8
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0


class DigitCNN(nn.Module):
    recipe: Recipe
    num_classes: int = 10

    @nn.compact
    def __call__(self, images_BxHxWxC, features: bool = False):
        h = images_BxHxWxC
        for width in self.recipe.widths:
            h = nn.relu(nn.Conv(width, (3, 3), padding="SAME")(h))
            h = nn.max_pool(h, (2, 2), strides=(2, 2))
        h_BxF = nn.relu(nn.Dense(self.recipe.features)(h.reshape(h.shape[0], -1)))
        return h_BxF if features else nn.Dense(self.num_classes)(h_BxF)


def _nhwc(images) -> np.ndarray:
    images = np.asarray(images, np.float32)
    return images[..., None] if images.ndim == 3 else images


def train_classifier(splits: dict, recipe: Recipe = Recipe()) -> tuple[dict, dict]:
    """(params, info): the CNN trained on splits['train'] with the fixed recipe; info holds its held-out accuracy."""
    t0 = time.perf_counter()
    x, y = _nhwc(splits["train"]["images"]), splits["train"]["labels"]
    model = DigitCNN(recipe)
    params = model.init(jax.random.key(recipe.seed), x[:1])["params"]
    steps_per_epoch = len(x) // recipe.batch_size
    tx = optax.adam(optax.cosine_decay_schedule(recipe.lr, recipe.epochs * steps_per_epoch))
    opt = tx.init(params)

    @jax.jit
    def step(params, opt, xb, yb):
        loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": p}, xb), yb).mean()
        grads = jax.grad(loss)(params)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt

    rng = np.random.default_rng(recipe.seed)
    for _ in range(recipe.epochs):
        order = rng.permutation(len(x))
        for i in range(steps_per_epoch):
            idx = order[i * recipe.batch_size : (i + 1) * recipe.batch_size]
            params, opt = step(params, opt, x[idx], y[idx])
    probs = predict(params, splits["validation"]["images"], recipe)
    accuracy = float((probs.argmax(-1) == splits["validation"]["labels"]).mean())
    info = {"held_out_accuracy": accuracy, "train_s": time.perf_counter() - t0, "recipe": dataclasses.asdict(recipe)}
    return params, info


def _apply(params, images, recipe: Recipe, features: bool, batch: int = 500) -> np.ndarray:
    fn = jax.jit(lambda p, x: DigitCNN(recipe).apply({"params": p}, x, features=features))
    x = _nhwc(images)
    return np.concatenate([np.asarray(fn(params, x[i : i + batch])) for i in range(0, len(x), batch)])


def predict(params, images, recipe: Recipe = Recipe()) -> np.ndarray:
    """Class probabilities [N, 10] of images in [0, 1]."""
    return np.asarray(jax.nn.softmax(_apply(params, images, recipe, features=False), -1))


def features(params, images, recipe: Recipe = Recipe()) -> np.ndarray:
    """Penultimate activations [N, recipe.features]."""
    return _apply(params, images, recipe, features=True)


def load_or_train(dataset: str, cache_dir, *, splits: dict | None = None, recipe: Recipe = Recipe()):
    """(params, info) from `cache_dir` when it holds this dataset's classifier of this recipe, else trained
    (on `splits` or the dataset's) and saved there."""
    cache = pathlib.Path(cache_dir)
    meta_path, params_path = cache / "classifier.json", cache / "classifier.msgpack"
    key = {"dataset": dataset, "recipe_version": RECIPE_VERSION, "recipe": dataclasses.asdict(recipe)}
    splits = splits or load_image_splits(dataset)
    template = DigitCNN(recipe).init(jax.random.key(0), _nhwc(splits["train"]["images"][:1]))["params"]
    if meta_path.is_file() and params_path.is_file():
        info = json.loads(meta_path.read_text())
        if {k: info.get(k) for k in key} == json.loads(json.dumps(key)):
            return serialization.from_bytes(template, params_path.read_bytes()), info
    params, info = train_classifier(splits, recipe)
    info = {**key, **info}
    cache.mkdir(parents=True, exist_ok=True)
    params_path.write_bytes(serialization.to_bytes(params))
    meta_path.write_text(json.dumps(info, indent=2))
    return params, info


def frechet_distance(a_NxF: np.ndarray, b_MxF: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2), in float64 (symmetric eigh, so
    no complex parts as with a general matrix square root)."""
    a, b = np.asarray(a_NxF, np.float64), np.asarray(b_MxF, np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(s_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ s_b @ root_a), 0, None)).sum()
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(s_a) + np.trace(s_b) - 2.0 * cross)


def class_entropy(probs_NxC: np.ndarray) -> float:
    """Entropy (nats) of the histogram of predicted classes: ln 10 = 2.303 when all ten are equally common."""
    counts = np.bincount(probs_NxC.argmax(-1), minlength=probs_NxC.shape[-1]).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def score(params, images, reference_features: np.ndarray, labels=None, recipe: Recipe = Recipe()) -> dict:
    """The numbers of one image set against the held-out set's features: FD, confident share (max prob
    >= 0.9), class-histogram entropy (and its share of ln C), and agreement with `labels` if given."""
    probs = predict(params, images, recipe)
    out = {
        "n": len(probs),
        "frechet_distance": frechet_distance(features(params, images, recipe), reference_features),
        "confident_share": float((probs.max(-1) >= 0.9).mean()),
        "class_entropy": class_entropy(probs),
        "class_entropy_share_of_max": class_entropy(probs) / math.log(probs.shape[-1]),
        "class_histogram": np.bincount(probs.argmax(-1), minlength=probs.shape[-1]).tolist(),
    }
    if labels is not None:
        out["label_agreement"] = float((probs.argmax(-1) == np.asarray(labels)).mean())
    return out


def real_floor(params, splits: dict, n: int = 2000, seed: int = 0, recipe: Recipe = Recipe()) -> dict:
    """`score` of n real training images against the held-out ones: the best a generator can hope for."""
    idx = np.random.default_rng(seed).permutation(len(splits["train"]["labels"]))[:n]
    reference = features(params, splits["validation"]["images"], recipe)
    return score(params, splits["train"]["images"][idx], reference, splits["train"]["labels"][idx], recipe)
