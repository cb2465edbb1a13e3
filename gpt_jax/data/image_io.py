"""Pictures from disk for the multimodal runs: PNG/JPEG (anything Pillow reads) -> float32 [H, W, C] in [0, 1].

What a picture goes through, in order (the training digits are MNIST-style: a light digit on black):
1. checks, before any pixel is decoded: the file exists, is not empty, is an image, and holds at most
   MAX_PIXELS pixels (Pillow reads only the header to know the size);
2. to grey or RGB; a transparent picture is laid over the background that contrasts with its strokes
   (light strokes over black, dark strokes over white), so the strokes stay visible;
3. polarity: if the outer one-pixel frame is on average light (> 0.5), the picture is taken to be a
   dark digit on a light background (ink on paper) and inverted, so the model sees what it trained on.
   MNIST-style pictures (dark border) are never touched;
4. padded to a square with its own background (aspect ratio kept), then resized to the run's size
   (skipped when it already has it, so a PNG written from a training image reads back as the same
   array up to uint8 rounding). With `fit` (what gpt_jax.vlm_run passes for MNIST-like runs), a picture of
   another size is instead normalised as MNIST's digits were: levels stretched, the ink's bounding box
   scaled to `fit` of the frame and centred by its centre of mass.
"""

from __future__ import annotations

import os
import pathlib
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 50_000_000  # ~7000 x 7000; PIL's own bomb guard only errors past 179M pixels
PLACEHOLDER = "<image>"


def _open(path: pathlib.Path) -> Image.Image:
    """The opened (not yet decoded) picture, or a one-line error."""
    if not path.exists():
        raise FileNotFoundError(f"image {str(path)!r} not found; check the path (relative to {os.getcwd()})")
    if path.is_dir():
        raise ValueError(f"image {str(path)!r} is a directory; pass a PNG or JPEG file")
    if path.stat().st_size == 0:
        raise ValueError(f"image {str(path)!r} is an empty (0-byte) file; pass a PNG or JPEG picture")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit is lower
            im = Image.open(path)
    except UnidentifiedImageError:
        raise ValueError(f"{str(path)!r} is not an image Pillow can read; pass a PNG or JPEG file") from None
    except Image.DecompressionBombError as e:  # Pillow's guard, past 2x its MAX_IMAGE_PIXELS (header only)
        raise ValueError(
            f"image {str(path)!r} is over the {MAX_PIXELS:,}-pixel limit ({e}); downscale it first"
        ) from None
    w, h = im.size
    if w * h > MAX_PIXELS:
        im.close()
        raise ValueError(
            f"image {str(path)!r} is {w}x{h} ({w * h:,} pixels), over the {MAX_PIXELS:,}-pixel limit; "
            "downscale it first (the model sees it at a few dozen pixels a side)"
        )
    if w == 0 or h == 0:
        raise ValueError(f"image {str(path)!r} has no pixels ({w}x{h}); pass a real picture")
    return im


def _decode(im: Image.Image, path: pathlib.Path) -> np.ndarray:
    """float32 [h, w, 3] in [0, 1]: transparency laid over a contrasting background."""
    try:
        im = ImageOps.exif_transpose(im)
        if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit / float greys: scale by their range
            a = np.asarray(im, np.float32)
            a = a / max(float(a.max()), 1.0) if im.mode != "F" else np.clip(a, 0.0, 1.0)
            return np.repeat(a[..., None], 3, axis=-1)
        has_alpha = im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info
        rgba = np.asarray(im.convert("RGBA"), np.float32) / 255.0
    except (OSError, ValueError, SyntaxError) as e:  # truncated or corrupt pixel data
        raise ValueError(f"image {str(path)!r} could not be decoded ({type(e).__name__}: {e}); re-save it") from None
    rgb, alpha = rgba[..., :3], rgba[..., 3:]
    if not has_alpha or alpha.min() >= 1.0:
        return rgb
    ink = float((_grey(rgb) * alpha[..., 0]).sum() / max(float(alpha.sum()), 1e-6))
    background = 0.0 if ink > 0.5 else 1.0
    return rgb * alpha + background * (1.0 - alpha)


def _grey(rgb_HxWx3: np.ndarray) -> np.ndarray:
    return rgb_HxWx3 @ np.asarray([0.299, 0.587, 0.114], np.float32)  # ITU-R 601, as PIL's "L"


def _frame_mean(x_HxW: np.ndarray) -> float:
    return float(np.concatenate([x_HxW[0], x_HxW[-1], x_HxW[:, 0], x_HxW[:, -1]]).mean())


def _to_size(x_HxWxC: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Pad to the target aspect ratio with the frame's colour, then resize (antialiased bilinear)."""
    h, w, c = x_HxWxC.shape
    th, tw = size
    if (h, w) == (th, tw):
        return x_HxWxC
    ph, pw = max(h, round(w * th / tw)), max(w, round(h * tw / th))  # the smallest box of the target shape
    fill = np.asarray([_frame_mean(x_HxWxC[..., i]) for i in range(c)], np.float32)
    canvas = np.broadcast_to(fill, (ph, pw, c)).copy()
    top, left = (ph - h) // 2, (pw - w) // 2
    canvas[top : top + h, left : left + w] = x_HxWxC
    planes = [
        np.asarray(Image.fromarray(np.ascontiguousarray(canvas[..., i])).resize((tw, th), Image.Resampling.BILINEAR))
        for i in range(c)
    ]
    return np.clip(np.stack(planes, axis=-1), 0.0, 1.0)


def _fit_digit(x_HxWxC: np.ndarray, grey_HxW: np.ndarray, size: tuple[int, int], fit: float) -> np.ndarray:
    """MNIST's own recipe: levels stretched (background 0, brightest ink 1), the ink's bounding box scaled so
    its longer side is `fit` of the frame (aspect kept), on black, centred by its centre of mass."""
    th, tw = size
    background, peak = _frame_mean(grey_HxW), float(grey_HxW.max())
    if peak - background < 0.05:  # no ink to find: a blank picture stays what it is
        return _to_size(x_HxWxC, size)
    x_HxWxC = np.clip((x_HxWxC - background) / (peak - background), 0.0, 1.0)
    ink_HxW = np.clip((grey_HxW - background) / (peak - background), 0.0, 1.0) > 0.25
    rows, cols = np.flatnonzero(ink_HxW.any(axis=1)), np.flatnonzero(ink_HxW.any(axis=0))
    crop = x_HxWxC[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    scale = fit * min(th, tw) / max(crop.shape[:2])
    nh, nw = max(1, round(crop.shape[0] * scale)), max(1, round(crop.shape[1] * scale))
    planes = [
        np.asarray(Image.fromarray(np.ascontiguousarray(crop[..., i])).resize((nw, nh), Image.Resampling.BILINEAR))
        for i in range(crop.shape[-1])
    ]
    digit = np.clip(np.stack(planes, axis=-1), 0.0, 1.0)
    mass = digit.mean(axis=-1)
    cy, cx = (np.indices(mass.shape) * mass).reshape(2, -1).sum(axis=1) / max(float(mass.sum()), 1e-6)
    top = int(np.clip(round((th - 1) / 2 - cy), 0, th - nh))
    left = int(np.clip(round((tw - 1) / 2 - cx), 0, tw - nw))
    out = np.zeros((th, tw, x_HxWxC.shape[-1]), np.float32)
    out[top : top + nh, left : left + nw] = digit
    return out


def load_image(
    path: str | os.PathLike, size: tuple[int, int], channels: int, *, fit: float | None = None
) -> np.ndarray:
    """float32 [H, W, C] in [0, 1], a light digit on black, as the training images are (see the module doc).

    size: (H, W) of the run's images; channels: 1 (grey) or 3 (RGB). fit: for a picture of another size, make
    it look like the training digits: levels stretched, the ink's bounding box scaled to `fit` of the frame
    (MNIST: 20/28) and centred by its centre of mass (MNIST's recipe); None: only padded and resized.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels={channels}; the image preprocessing makes 1 (grey) or 3 (RGB)")
    path = pathlib.Path(path)
    with _open(path) as im:
        rgb = _decode(im, path)
    grey = _grey(rgb)
    if _frame_mean(grey) > 0.5:  # dark on light: invert to the training data's light-on-dark
        rgb, grey = 1.0 - rgb, 1.0 - grey
    x_HxWxC = (grey[..., None] if channels == 1 else rgb).astype(np.float32)
    if fit is not None and x_HxWxC.shape[:2] != tuple(size):
        return _fit_digit(x_HxWxC, grey, tuple(size), fit).astype(np.float32)
    return _to_size(x_HxWxC, tuple(size)).astype(np.float32)


def save_image_png(array, path: str | os.PathLike) -> None:
    """Writes a float [H, W] / [H, W, 1] / [H, W, 3] image in [0, 1] as an 8-bit PNG (grey or RGB)."""
    a = np.asarray(array, np.float32)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] != 3):
        raise ValueError(f"image array of shape {a.shape}; expected [H, W], [H, W, 1] or [H, W, 3]")
    if not np.isfinite(a).all():
        raise ValueError("image array holds NaN or inf; expected values in [0, 1]")
    u8 = np.round(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)
    Image.fromarray(u8).save(pathlib.Path(path), format="PNG")


def place_images(prompt: str, num_images: int, placeholder: str = PLACEHOLDER) -> str:
    """The prompt with exactly one `placeholder` per image, or a one-line error.

    Rule (the training rows' layout, gpt_jax.data.vqa.render_prompt): a prompt without any placeholder gets
    one per image prepended ("<image> <image> " + prompt); a prompt with placeholders must have exactly one
    per image, filled in order.
    """
    n = prompt.count(placeholder)
    if n == 0:
        return f"{placeholder} " * num_images + prompt
    if num_images > n:
        raise ValueError(
            f"{num_images} images given but the prompt has only {n} {placeholder} placeholder(s); put one "
            f"{placeholder} in the prompt per image (or none at all: then one is put before the prompt per image)"
        )
    if num_images < n:
        raise ValueError(
            f"the prompt has {n} {placeholder} placeholder(s) but {num_images} image(s) were given; "
            "pass one --image per placeholder"
        )
    return prompt
