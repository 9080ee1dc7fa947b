"""Thumbnails from a request's decoded pixels (store.render): Pillow's size rule, right on every layout."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from models.image import rgb_on_white
from store.render import fit, from_pixels, thumbnail_bgr, thumbnail_jpeg
from tests.store.conftest import png


@pytest.mark.parametrize(
    "size", [(300, 150), (129, 1000), (1000, 129), (127, 127), (128, 300), (333, 777), (4000, 3000), (1, 500)]
)
def test_the_size_is_the_one_pillow_thumbnail_gives(size):
    img = Image.new("L", size)
    img.thumbnail((128, 128))
    assert fit(*size, 128) == img.size


def pillow_thumbnail(img: Image.Image, size: int = 64) -> np.ndarray:
    """The reference: what store.thumbnails.render_thumbnail does to a file, as an RGB array."""
    img = img.copy()
    img.thumbnail((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return np.asarray(rgb_on_white(img)).astype(int)


def as_rgb(bgr: np.ndarray) -> np.ndarray:
    return bgr[:, :, ::-1].astype(int)


def ink_drawing(width: int = 300, height: int = 200) -> Image.Image:
    """Black anti-aliased strokes on transparency, as the drawing pages export them."""
    alpha = Image.new("L", (width, height), 0)
    pen = np.zeros((height, width), np.uint8)
    cv2.circle(pen, (width // 2, height // 2), height // 3, 255, 9, cv2.LINE_AA)
    cv2.line(pen, (10, 10), (width - 10, height - 30), 255, 5, cv2.LINE_AA)
    alpha = Image.fromarray(pen)
    rgba = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    rgba.putalpha(alpha)
    return rgba


def test_ink_on_transparency_matches_the_pillow_thumbnail():
    img = ink_drawing()
    pixels = np.asarray(img)  # RGBA, as libspng decodes it
    ours = as_rgb(thumbnail_bgr(pixels, "RGB", 64))
    reference = pillow_thumbnail(img)
    assert ours.shape == reference.shape == (43, 64, 3)
    assert np.abs(ours - reference).mean() < 2.0
    assert ours[0, 0].tolist() == [255, 255, 255]  # transparency is white, not black


@pytest.mark.parametrize("size", [(1000, 750), (401, 300), (280, 280)])
def test_ink_along_the_edges_stays_in_the_thumbnail(size):
    # A 4-px frame: shrinking by a whole factor must not cut the pixels left over at the edges
    # (the 1000x750 frame's sides once came out white) nor shift the rest.
    width, height = size
    gray = np.full((height, width), 255, np.uint8)
    cv2.rectangle(gray, (0, 0), (width - 1, height - 1), 0, 4)
    ours = as_rgb(thumbnail_bgr(gray, "RGB", 128))
    reference = pillow_thumbnail(Image.fromarray(gray), 128)
    assert ours.shape == reference.shape
    assert max(ours[:, 0].mean(), ours[:, -1].mean(), ours[0].mean(), ours[-1].mean()) < 200
    assert np.abs(ours - reference).mean() < 2.0


def test_colour_with_transparency_keeps_its_edges_from_darkening():
    # A red disc on transparent black: averaging straight colours would make its rim dark red.
    pen = np.zeros((200, 200), np.uint8)
    cv2.circle(pen, (100, 100), 60, 255, -1, cv2.LINE_AA)
    rgba = np.zeros((200, 200, 4), np.uint8)
    rgba[:, :, 0] = 255 * (pen > 0)
    rgba[:, :, 3] = pen
    img = Image.fromarray(rgba, "RGBA")
    ours = as_rgb(thumbnail_bgr(rgba, "RGB", 64))
    reference = pillow_thumbnail(img)
    assert np.abs(ours - reference).mean() < 2.0
    assert ours[:, :, 0].min() > 240  # red and white everywhere: no dark rim


@pytest.mark.parametrize("layout", ["gray", "bgr", "bgra-opaque", "gray-alpha"])
def test_every_pixel_layout_gives_the_pillow_thumbnail(layout):
    rng = np.random.default_rng(3)
    rgb = cv2.GaussianBlur(rng.integers(0, 256, (150, 210, 3), dtype=np.uint8), (9, 9), 3)
    if layout == "gray":
        pixels, img = rgb[:, :, 0], Image.fromarray(rgb[:, :, 0], "L")
    elif layout == "bgr":
        pixels, img = rgb[:, :, ::-1].copy(), Image.fromarray(rgb, "RGB")
    elif layout == "bgra-opaque":
        pixels = cv2.cvtColor(rgb[:, :, ::-1].copy(), cv2.COLOR_BGR2BGRA)
        img = Image.fromarray(rgb, "RGB")
    else:
        alpha = np.full((150, 210), 255, np.uint8)
        alpha[:, :70] = 0
        pixels = np.dstack([rgb[:, :, 0], alpha])
        img = Image.fromarray(pixels, "LA")
    ours = as_rgb(thumbnail_bgr(pixels, "BGR" if layout.startswith("bgr") else "RGB", 64))
    reference = pillow_thumbnail(img)
    assert ours.shape == reference.shape == (46, 64, 3)
    assert np.abs(ours - reference).mean() < 3.0


def test_a_small_image_is_not_enlarged_and_the_jpeg_is_rgb():
    jpeg = thumbnail_jpeg(np.full((20, 30), 90, np.uint8), "RGB", 64)
    with Image.open(io.BytesIO(jpeg)) as thumb:
        assert (thumb.format, thumb.mode, thumb.size) == ("JPEG", "RGB", (30, 20))


def test_sixteen_bit_or_odd_channels_are_refused_for_the_file_path():
    with pytest.raises(ValueError):
        thumbnail_bgr(np.zeros((10, 10), np.uint16), "RGB", 64)
    with pytest.raises(ValueError):
        thumbnail_bgr(np.zeros((10, 10, 5), np.uint8), "RGB", 64)


def test_only_images_without_an_exif_orientation_take_the_pixel_path():
    plain = png(20, 10)
    assert from_pixels(plain, "PNG") and from_pixels(None, "ARRAY")
    # A PNG can carry EXIF (an eXIf chunk) and so an orientation, which the pixels do not show.
    with_exif = plain[:33] + b"\x00\x00\x00\x00eXIf" + plain[33:]
    assert not from_pixels(with_exif, "PNG")
    assert not from_pixels(b"\xff\xd8\xff", "JPEG")
