"""Picture preprocessing for the multimodal runs (gpt_jax.data.image_io): formats, sizes, polarity, bad input."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from gpt_jax.data import image_io


def _digit(h=28, w=28, seed=0):
    """A light 'digit' (a bar and a blob) on black, float32 [h, w] in [0, 1], MNIST-style."""
    rng = np.random.default_rng(seed)
    x = np.zeros((h, w), np.float32)
    x[h // 4 : 3 * h // 4, w // 2 - 2 : w // 2 + 2] = 1.0
    x[h // 3 : h // 2, w // 4 : w // 2] = rng.uniform(0.3, 1.0, (h // 2 - h // 3, w // 2 - w // 4))
    return x


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg and msg
    return msg


def test_png_round_trip_is_the_same_array_up_to_uint8(tmp_path):
    x = _digit()
    image_io.save_image_png(x, tmp_path / "d.png")
    y = image_io.load_image(tmp_path / "d.png", (28, 28), 1)
    assert y.shape == (28, 28, 1) and y.dtype == np.float32
    np.testing.assert_allclose(y[..., 0], x, atol=0.5 / 255 + 1e-6)
    # sklearn digits (values k/16) survive too: 8-bit PNG keeps every level apart
    s = np.arange(64, dtype=np.float32).reshape(8, 8) % 17 / 16.0
    image_io.save_image_png(s[..., None], tmp_path / "s.png")
    got = image_io.load_image(tmp_path / "s.png", (8, 8), 1)[..., 0]
    np.testing.assert_allclose(got, s, atol=0.5 / 255 + 1e-6)
    assert np.array_equal(np.round(got * 16), np.round(s * 16))


def test_rgb_png_to_grey_and_to_rgb(tmp_path):
    x = _digit()
    rgb = np.stack([x, 0.5 * x, 0.25 * x], axis=-1)
    image_io.save_image_png(rgb, tmp_path / "c.png")
    grey = image_io.load_image(tmp_path / "c.png", (28, 28), 1)
    want = rgb @ np.asarray([0.299, 0.587, 0.114], np.float32)
    np.testing.assert_allclose(grey[..., 0], want, atol=1.0 / 255)
    colour = image_io.load_image(tmp_path / "c.png", (28, 28), 3)
    assert colour.shape == (28, 28, 3)
    np.testing.assert_allclose(colour, rgb, atol=0.5 / 255 + 1e-6)
    # a grey picture asked for 3 channels repeats its plane
    image_io.save_image_png(x, tmp_path / "g.png")
    g3 = image_io.load_image(tmp_path / "g.png", (28, 28), 3)
    np.testing.assert_allclose(g3[..., 0], g3[..., 2])


def test_jpeg_dark_on_light_odd_size_is_inverted_and_padded(tmp_path):
    # a 37 wide x 53 high picture: black ink on white paper, saved as JPEG
    x = _digit(53, 37)
    paper = np.round((1.0 - x) * 255).astype(np.uint8)
    Image.fromarray(np.stack([paper] * 3, axis=-1)).save(tmp_path / "p.jpg", quality=95)
    y = image_io.load_image(tmp_path / "p.jpg", (28, 28), 1)[..., 0]
    assert y.shape == (28, 28)
    assert y.min() >= 0.0 and y.max() <= 1.0
    assert image_io._frame_mean(y) < 0.05  # inverted: the paper became black
    # aspect ratio kept: 37/53 of the width holds the picture, the padded sides stay black
    assert y[:, :3].max() < 0.05 and y[:, -3:].max() < 0.05
    # the same picture as a light-on-dark PNG gives (nearly) the same array: the JPEG only adds noise
    image_io.save_image_png(x, tmp_path / "p.png")
    z = image_io.load_image(tmp_path / "p.png", (28, 28), 1)[..., 0]
    assert np.abs(y - z).mean() < 0.02
    assert np.corrcoef(y.ravel(), z.ravel())[0, 1] > 0.98


def test_big_picture_is_downscaled_where_the_digit_is(tmp_path):
    x = _digit(280, 280)
    image_io.save_image_png(x, tmp_path / "big.png")
    y = image_io.load_image(tmp_path / "big.png", (28, 28), 1)[..., 0]
    small = x.reshape(28, 10, 28, 10).mean(axis=(1, 3))
    assert np.abs(y - small).max() < 0.35 and np.abs(y - small).mean() < 0.03


def test_fit_makes_a_large_drawing_look_like_mnist(tmp_path):
    # a dark, small, off-centre stroke on grey-white paper in a 200 wide x 150 high photo
    paper = np.full((150, 200), 0.9, np.float32)
    paper[20:70, 140:150] = 0.1  # a vertical bar, 50 high and 10 wide
    paper[20:26, 125:150] = 0.1  # and a top stroke: a "7"-ish shape
    image_io.save_image_png(paper, tmp_path / "photo.png")
    y = image_io.load_image(tmp_path / "photo.png", (28, 28), 1, fit=20 / 28)[..., 0]
    ink = y > 0.25
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    assert 19 <= rows[-1] - rows[0] + 1 <= 21  # the longer side spans 20 of 28 pixels
    assert 9 <= cols[-1] - cols[0] + 1 <= 11  # and the aspect ratio (50 x 25) is kept
    assert y.max() > 0.95 and image_io._frame_mean(y) == 0.0  # levels stretched, black margin
    cy, cx = (np.indices(y.shape) * y).reshape(2, -1).sum(1) / y.sum()
    assert abs(cy - 13.5) <= 1.0 and abs(cx - 13.5) <= 1.0  # centred by its centre of mass
    # without fit the stroke stays small and off-centre
    plain = image_io.load_image(tmp_path / "photo.png", (28, 28), 1)[..., 0]
    assert (plain > 0.25).any(1).sum() < 12
    # a picture at the run's size is never refitted: the round trip stays exact
    x = _digit()
    image_io.save_image_png(x, tmp_path / "d.png")
    np.testing.assert_allclose(
        image_io.load_image(tmp_path / "d.png", (28, 28), 1, fit=20 / 28)[..., 0], x, atol=0.5 / 255 + 1e-6
    )
    # a blank picture has no ink to fit
    image_io.save_image_png(np.zeros((40, 40)), tmp_path / "blank.png")
    assert image_io.load_image(tmp_path / "blank.png", (28, 28), 1, fit=20 / 28).max() == 0.0


def test_transparent_strokes_stay_visible(tmp_path):
    x = _digit()
    # black strokes on a fully transparent background (what drawing apps export)
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[..., 3] = np.round(x * 255).astype(np.uint8)
    Image.fromarray(rgba).save(tmp_path / "t.png")
    y = image_io.load_image(tmp_path / "t.png", (28, 28), 1)[..., 0]
    np.testing.assert_allclose(y, x, atol=1.5 / 255)
    # white strokes on transparency give the same digit
    rgba[..., :3] = 255
    Image.fromarray(rgba).save(tmp_path / "w.png")
    np.testing.assert_allclose(image_io.load_image(tmp_path / "w.png", (28, 28), 1)[..., 0], x, atol=1.5 / 255)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        image_io.load_image(tmp_path / "nope.png", (28, 28), 1)
    assert "not found" in _one_line(e)


def test_not_an_image(tmp_path):
    (tmp_path / "a.png").write_text("hello, I am text\n" * 10)
    with pytest.raises(ValueError) as e:
        image_io.load_image(tmp_path / "a.png", (28, 28), 1)
    assert "not an image" in _one_line(e)


def test_empty_file(tmp_path):
    (tmp_path / "e.png").write_bytes(b"")
    with pytest.raises(ValueError) as e:
        image_io.load_image(tmp_path / "e.png", (28, 28), 1)
    assert "0-byte" in _one_line(e)


def test_truncated_image(tmp_path):
    image_io.save_image_png(np.random.default_rng(0).uniform(size=(64, 64)), tmp_path / "f.png")
    data = (tmp_path / "f.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError) as e:
        image_io.load_image(tmp_path / "cut.png", (28, 28), 1)
    assert "could not be decoded" in _one_line(e)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def test_huge_image_refused_before_decoding(tmp_path):
    # A valid 20000x20000 grey PNG header with only one row of pixel data: decoding it would need 400 MB
    # (and fail on the missing rows), so the size error proves the refusal came from the header alone.
    ihdr = struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr)
    png += _chunk(b"IDAT", zlib.compress(b"\x00" * 20001)) + _chunk(b"IEND", b"")
    (tmp_path / "huge.png").write_bytes(png)
    with pytest.raises(ValueError) as e:
        image_io.load_image(tmp_path / "huge.png", (28, 28), 1)
    assert "pixel limit" in _one_line(e) and "400000000" in str(e.value).replace(",", "")
    # under Pillow's own guard (179M pixels) our header check refuses it, naming the size
    png = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", 10000, 9000, 8, 0, 0, 0, 0))
    png += _chunk(b"IDAT", zlib.compress(b"\x00" * 10001)) + _chunk(b"IEND", b"")
    (tmp_path / "big.png").write_bytes(png)
    with pytest.raises(ValueError) as e:
        image_io.load_image(tmp_path / "big.png", (28, 28), 1)
    assert "10000x9000" in _one_line(e) and "pixel limit" in str(e.value)


def test_bad_channels(tmp_path):
    image_io.save_image_png(_digit(), tmp_path / "d.png")
    with pytest.raises(ValueError) as e:
        image_io.load_image(tmp_path / "d.png", (28, 28), 2)
    assert "channels" in _one_line(e)


def test_placeholders():
    assert image_io.place_images("What digit is this?", 1) == "<image> What digit is this?"
    assert image_io.place_images("which is larger?", 2) == "<image> <image> which is larger?"
    two = "<image> <image> which is larger, the first or the second?"
    assert image_io.place_images(two, 2) == two
    assert image_io.place_images("no picture", 0) == "no picture"
    with pytest.raises(ValueError) as e:
        image_io.place_images("<image> what digit?", 2)
    assert "2 images given but the prompt has only 1" in _one_line(e)
    with pytest.raises(ValueError) as e:
        image_io.place_images(two, 1)
    assert "one --image per placeholder" in _one_line(e)


def test_save_rejects_bad_arrays(tmp_path):
    with pytest.raises(ValueError):
        image_io.save_image_png(np.zeros((4, 4, 2)), tmp_path / "x.png")
    with pytest.raises(ValueError):
        image_io.save_image_png(np.full((4, 4), np.nan), tmp_path / "x.png")
