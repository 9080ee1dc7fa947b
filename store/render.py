"""Thumbnail pixels from an image already decoded (a request's), with OpenCV: no decode, no Pillow.

The background writer makes the thumbnail of a kept canvas here, from the pixels its request
decoded, while it writes the original (store.saving): the same size as Pillow's
`Image.thumbnail` gives (`fit`), transparency on white, a JPEG at quality 85. Only images that
cannot carry an EXIF orientation come here (`from_pixels`): PNG without an eXIf chunk, legacy
arrays. Photos keep the Pillow path (store.thumbnails.render_thumbnail: EXIF orientation, JPEG
draft decoding).

Measured in-process (`python -m bench.store`), per 400x400 RGBA canvas: Pillow's decode,
Lanczos and JPEG 2.3 ms; this 0.15-0.3 ms. OpenCV's INTER_AREA has a fast path only for whole
factors (0.06 ms against 0.7 ms for 400 -> 128 on 4 channels), so the image is cut to a multiple
of the factor first (under `factor` pixels, split between the edges), then brought to the
exact size by a bicubic warp that puts each pixel where it is in the whole image.

An original that is already about a thumbnail's size, or a light drawing up to 4x it, is its own
thumbnail (`own_thumbnail`): the digit page's 140 px export is a 1.9 KB PNG, its 128-px JPEG
1.5 KB, and making that JPEG cost 0.35 ms of CPU (the file included) on a request that costs 0.8 ms
in-process without the store; a 400 px canvas is 5.5 KB (median), and its JPEG cost the loaded
writer about half of its CPU per image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from store.exif import PNG_SIGNATURE

JPEG_QUALITY = 85
_JPEG_OPTIONS = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY, cv2.IMWRITE_JPEG_OPTIMIZE, 1]


def from_pixels(data: bytes | None, fmt: str) -> bool:
    """Say whether an image's thumbnail may be made from its decoded pixels (no EXIF orientation)."""
    if fmt == "ARRAY" or data is None:
        return True
    return fmt == "PNG" and data.startswith(PNG_SIGNATURE) and b"eXIf" not in data


OWN_THUMBNAIL_BYTES = 64 * 1024  # larger files are worth a JPEG thumbnail, whatever their size
# A canvas drawing (ink on transparency) up to 4x the thumbnail's side is a light PNG: the bench's
# 400 px digit canvases are 5.5 KB (median; 1.8-20 KB), against 1.5 KB for their 128 px JPEG.
# Serving it as it is saves the writer the thumbnail (shrink, JPEG, one more file: about half of
# its CPU per image in a loaded worker, docs/IMAGE_STORE.md), for a few KB more per image in the
# gallery's grid.
LIGHT_SIDE = 4
LIGHT_BYTES = 16 * 1024


def own_thumbnail(fmt: str, width: int, height: int, byte_size: int, size: int) -> bool:
    """Say whether an image may be served as its own thumbnail: a PNG (no EXIF orientation to apply
    once it has no eXIf chunk, which the caller checks), at most 1.5x the thumbnail's side and
    64 KiB, or at most LIGHT_SIDE x that side and LIGHT_BYTES. The browser scales it as it would the
    JPEG; one file fewer per kept image."""
    if fmt != "PNG" or byte_size <= 0:
        return False
    side = max(width, height)
    return (side <= size * 3 // 2 and byte_size <= OWN_THUMBNAIL_BYTES) or (
        side <= size * LIGHT_SIDE and byte_size <= LIGHT_BYTES
    )


def serves_itself(data: bytes, fmt: str, width: int, height: int, size: int) -> bool:
    """Say whether an image, given its bytes, is its own thumbnail (own_thumbnail and no eXIf chunk)."""
    return own_thumbnail(fmt, width, height, len(data), size) and from_pixels(data, fmt)


def fit(width: int, height: int, size: int) -> tuple[int, int]:
    """Return the size `Image.thumbnail((size, size))` gives: the aspect kept, never enlarged."""
    if width <= size and height <= size:
        return width, height
    aspect = width / height
    x = y = size
    if x / y >= aspect:
        x = max(min(math.floor(y * aspect), math.ceil(y * aspect), key=lambda n: abs(aspect - n / y)), 1)
    else:
        y = max(
            min(math.floor(x / aspect), math.ceil(x / aspect), key=lambda n: abs(aspect - x / n) if n else 0),
            1,
        )
    return x, y


def shrink(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area-average an image down to `size` (width, height): whole factors first, then the rest."""
    height, width = pixels.shape[:2]
    if (width, height) == size:
        return pixels
    # Under 2x, bicubic reads every source pixel and is the closest to Pillow's Lanczos.
    near = width < 2 * size[0] and height < 2 * size[1]
    factor = min(width // size[0], height // size[1])
    if factor < 2:
        return cv2.resize(pixels, size, interpolation=cv2.INTER_CUBIC if near else cv2.INTER_AREA)
    # Padded (edge pixels repeated) to whole multiples of the factor on the right and bottom, so
    # that no ink near an edge is cut off and the small image starts where the whole one does.
    right, bottom = -width % factor, -height % factor
    if right or bottom:
        pixels = cv2.copyMakeBorder(pixels, 0, bottom, 0, right, cv2.BORDER_REPLICATE)
    small = cv2.resize(
        pixels, (pixels.shape[1] // factor, pixels.shape[0] // factor), interpolation=cv2.INTER_AREA
    )
    # Then bicubic (under 2x) by the whole image's scale, so that each output pixel is centred
    # where it is in the whole image: resize with fx/fy samples at (x + 0.5) / fx - 0.5, the
    # size it gives (rounded) is never under `size`, and cutting the extra last row or column
    # moves no other pixel. 2-3x faster than the same as an affine warp (0.13 against 0.26 ms for
    # 400 -> 128, 0.06 against 0.19 for 280 -> 128), whose positions are rounded to 1/32 px,
    # and as close to Pillow's Lanczos (mean 0.19-0.33 levels on the bench's canvases; closer
    # than before at the edges of ink that reaches them). Bilinear took half the time but thin
    # strokes came out 3.2 levels from Pillow on average, against 1.7 (Pillow's own bilinear: 1.9).
    sx, sy = width / size[0] / factor, height / size[1] / factor
    scaled = cv2.resize(small, (0, 0), fx=1 / sx, fy=1 / sy, interpolation=cv2.INTER_CUBIC)
    return scaled[: size[1], : size[0]]


def thumbnail_bgr(pixels: np.ndarray, order: str, size: int) -> np.ndarray:
    """Return an image's thumbnail as BGR uint8, fit into size x size, transparency on white."""
    if pixels.dtype != np.uint8:
        raise ValueError(f"a thumbnail needs 8-bit pixels, got {pixels.dtype}")
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    elif pixels.ndim == 3 and pixels.shape[2] == 2:  # gray and alpha
        gray, alpha = cv2.split(pixels)
        pixels = cv2.merge([gray, gray, gray, alpha])
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] not in (3, 4)):
        raise ValueError(f"a thumbnail needs gray or colour pixels, got shape {list(pixels.shape)}")
    height, width = pixels.shape[:2]
    target = fit(width, height, size)
    if pixels.ndim == 2:
        return cv2.cvtColor(shrink(pixels, target), cv2.COLOR_GRAY2BGR)
    if pixels.shape[2] == 4:
        alpha = cv2.extractChannel(pixels, 3)
        if cv2.minMaxLoc(alpha)[0] == 255:  # opaque: the colours alone
            pixels = cv2.cvtColor(pixels, cv2.COLOR_BGRA2BGR)
        elif cv2.countNonZero(pixels.reshape(height, -1)) == cv2.countNonZero(alpha):
            # (Every non-zero byte is alpha's: no colour anywhere. Half the cost of converting to
            # BGR and counting: 0.015 against 0.036 ms at 400x400.)
            # Black ink on transparency (every canvas of the drawing pages): on white, each pixel
            # is 255 - alpha, so only the alpha channel is shrunk: exact, and a quarter of the work.
            return cv2.cvtColor(cv2.bitwise_not(shrink(alpha, target)), cv2.COLOR_GRAY2BGR)
        else:
            # Colour with transparency: on white first, as averaging straight colours would darken
            # the edges (a transparent pixel's colour is often black).
            from models.image import on_white

            pixels = on_white(pixels[:, :, :3], pixels[:, :, 3:4])
    small = shrink(pixels, target)
    return cv2.cvtColor(small, cv2.COLOR_RGB2BGR) if order == "RGB" else small


def thumbnail_jpeg(pixels: np.ndarray, order: str, size: int) -> bytes:
    """Return an image's thumbnail as JPEG bytes (quality 85, optimised Huffman tables)."""
    # IPP is off in request threads (models.runtime.set_opencv_ipp) but on by default in this
    # one: on a virtual machine its CPU check costs 8 us per OpenCV call. The switch is per thread.
    cv2.ipp.setUseIPP(False)
    ok, buffer = cv2.imencode(".jpg", thumbnail_bgr(pixels, order, size), _JPEG_OPTIONS)
    if not ok:  # pragma: no cover - JPEG encoding of a uint8 BGR array does not fail
        raise ValueError("cannot encode the thumbnail as JPEG")
    return buffer.tobytes()


@dataclass(frozen=True)
class Decoded:
    """A request's decoded pixels, handed to the writer to make the thumbnail from."""

    pixels: np.ndarray
    order: str = "BGR"
    small: bool = False  # already the thumbnail's size (made in the request): not counted as held


# For an image its request decoded that is its own thumbnail: proof that it decodes, no pixels held.
DECODED_ONLY = Decoded(np.zeros((0, 0), np.uint8), small=True)
