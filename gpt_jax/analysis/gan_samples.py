"""Images from a DCGAN generator, and sample grids as PNG files (PIL, 8-bit grey or RGB)."""

from __future__ import annotations

import io
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from gpt_jax.models.dcgan import DCGANConfig, Generator
from gpt_jax.paths import as_path, is_local


def to_unit(images, cfg: DCGANConfig):
    """The generator's range (tanh: [-1, 1]) -> [0, 1], the data's range."""
    return (images + 1.0) / 2.0 if cfg.output == "tanh" else images


def from_unit(images, cfg: DCGANConfig):
    return images * 2.0 - 1.0 if cfg.output == "tanh" else images


def grid_labels(cfg: DCGANConfig, n: int) -> np.ndarray | None:
    """Labels 0, 1, ..., 9, 0, 1, ... (a grid with one class per column), None if unconditional."""
    return (np.arange(n) % cfg.num_classes).astype(np.int32) if cfg.num_classes else None


def generate(cfg: DCGANConfig, g_params, n: int, seed: int, labels=None, batch: int = 500) -> np.ndarray:
    """`n` images in [0, 1], [n, H, W, C], from noise of `seed` (the same seed: the same images)."""
    z = jax.random.normal(jax.random.key(seed), (n, cfg.z_dim), jnp.float32)
    if labels is None and cfg.num_classes:
        labels = jax.random.randint(jax.random.fold_in(jax.random.key(seed), 1), (n,), 0, cfg.num_classes)
    fn = jax.jit(lambda p, z, y: to_unit(Generator(cfg).apply({"params": p}, z, y), cfg))
    out = []
    for i in range(0, n, batch):
        y = None if labels is None else jnp.asarray(labels[i : i + batch], jnp.int32)
        out.append(np.asarray(fn(g_params, z[i : i + batch], y)))
    return np.clip(np.concatenate(out), 0.0, 1.0)


def grid(images_NxHxWxC: np.ndarray, cols: int, pad: int = 2) -> np.ndarray:
    """One uint8 image [rows*(H+pad)+pad, cols*(W+pad)+pad, C] of the images row by row, on black."""
    n, h, w, c = images_NxHxWxC.shape
    rows = -(-n // cols)
    out = np.zeros((rows * (h + pad) + pad, cols * (w + pad) + pad, c), np.uint8)
    pixels = np.round(np.clip(images_NxHxWxC, 0.0, 1.0) * 255).astype(np.uint8)
    for i in range(n):
        r, col = divmod(i, cols)
        out[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + col * (w + pad) : pad + col * (w + pad) + w] = pixels[
            i
        ]
    return out


def write_png(path: str | pathlib.Path, images_NxHxWxC: np.ndarray, cols: int = 10, scale: int = 1) -> pathlib.Path:
    """A grid PNG of the images (each pixel `scale` x `scale`); written to a temporary name, then renamed."""
    path = as_path(path)
    g = grid(images_NxHxWxC, cols)
    img = Image.fromarray(g[..., 0] if g.shape[-1] == 1 else g)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not is_local(path):  # an object store replaces an object whole: one write
        buf = io.BytesIO()
        img.save(buf, format="PNG", optimize=True)
        path.write_bytes(buf.getvalue())
        return path
    tmp = path.with_suffix(".tmp.png")
    img.save(tmp, optimize=True)
    tmp.replace(path)
    return path


def write_sample_grid(path, cfg: DCGANConfig, g_params, seed: int, rows: int = 10, cols: int = 10, scale: int = 1):
    """A rows x cols grid of generated images (class-conditional: digit c in column c)."""
    n = rows * cols
    return write_png(path, generate(cfg, g_params, n, seed, grid_labels(cfg, n)), cols=cols, scale=scale)
