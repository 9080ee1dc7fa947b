"""Handwritten digits: make a drawing look like an MNIST digit, then classify it with the CNN."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import cv2
import numpy as np

from models.runtime import ModelInputError, ServedModel

SIZE = 28  # MNIST field
BOX = 20  # MNIST scaled each digit's bounding box into 20x20 ...
CENTER = 14.0  # ... and put its centre of mass here (the measured mean over the training set)
WORK = 4 * BOX  # long side of the working crop: thick enough to measure and fix strokes
# Ink contrast (0..255, against the background) under which nothing counts as drawn.
MIN_CONTRAST = 40
# Stroke width at WORK resolution: MNIST digits upscaled 4x measure 9-11.5 px (quartiles).
STROKE_MIN = 7.0
STROKE_MAX = 16.0
MAX_THIN = 4  # erode by at most this many pixels per side
# Components under this share of the ink are stray taps or noise, not part of the digit.
SPECK_SHARE = 0.04
NOTHING_DRAWN = "Nothing drawn: the canvas is empty."


@lru_cache(maxsize=32)
def _ellipse(size: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


def background_level(gray: np.ndarray) -> int:
    """Return the background gray level: the median of the image's border pixels."""
    # The border count (2w + 2h - 4) is even: the median is the mean of the two middle values.
    # A sort of ~1,000 bytes costs a third of np.median's dispatch.
    border = np.sort(np.concatenate((gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1])))
    half = len(border) // 2
    return (int(border[half - 1]) + int(border[half])) // 2


def _ink(gray: np.ndarray, background: int) -> np.ndarray:
    """Return ink strength (0..255) as the distance from the background, white ink on black."""
    if background == 255:
        return cv2.bitwise_not(gray)
    if background >= 128:
        return cv2.subtract(np.full_like(gray, background), gray)
    return cv2.subtract(gray, np.full_like(gray, background))


def _to_work(crop: np.ndarray) -> np.ndarray:
    """Resize a crop so its long side is WORK pixels, keeping the aspect ratio."""
    h, w = crop.shape
    scale = WORK / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(crop, size, interpolation=interpolation)


def _stretch(img: np.ndarray) -> np.ndarray:
    """Scale intensities so the brightest ink is 255 (faint pens and thin strokes look like MNIST)."""
    peak = int(img.max())
    if peak == 0 or peak == 255:
        return img
    return cv2.convertScaleAbs(img, alpha=255.0 / peak)


def _stroke_width(mask: np.ndarray) -> float:
    """Estimate the stroke width of a binary mask: twice its area over its boundary length."""
    area = cv2.countNonZero(mask)
    # Interior pixels have ink on all four sides; erode's default border counts the edge as ink.
    boundary = area - cv2.countNonZero(cv2.erode(mask, _CROSS))
    return 2.0 * area / max(boundary, 1)


def to_mnist(gray: np.ndarray) -> np.ndarray:
    """Return a 28x28 uint8 digit made as MNIST was: white on black, 20x20 box, centre of mass centred.

    Raises ModelInputError (422, nothing_drawn) when the image holds no ink: a well-formed image
    that has nothing to read, as the 422 of a low certainty.
    """
    if gray.ndim != 2 or gray.dtype != np.uint8:
        raise ModelInputError("The digit image must be 8-bit grayscale.", code="bad_image")
    if min(gray.shape) < 3:
        raise ModelInputError(NOTHING_DRAWN, code="nothing_drawn", status=422)

    # 1. Find the ink's bounding box at full resolution with one cheap threshold; all later
    #    work happens on a crop of at most WORK x WORK pixels, whatever the canvas size.
    background = background_level(gray)
    if background >= 128:
        _, mask = cv2.threshold(gray, background - MIN_CONTRAST, 255, cv2.THRESH_BINARY_INV)
    else:
        _, mask = cv2.threshold(gray, background + MIN_CONTRAST, 255, cv2.THRESH_BINARY)
    x, y, w, h = cv2.boundingRect(mask)
    if not w:
        raise ModelInputError(NOTHING_DRAWN, code="nothing_drawn", status=422)
    crop = gray[y : y + h, x : x + w]
    work = _stretch(_ink(_to_work(crop), background))

    # 2. Drop stray specks (a tap beside the digit), then crop again to the digit alone.
    _, binary = cv2.threshold(work, 96, 255, cv2.THRESH_BINARY)
    count, _, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if count > 2:
        areas = stats[1:, cv2.CC_STAT_AREA]
        keep = stats[1:][areas >= min(SPECK_SHARE * areas.sum(), areas.max())]
        x0, y0 = keep[:, 0].min(), keep[:, 1].min()
        x1 = (keep[:, 0] + keep[:, 2]).max()
        y1 = (keep[:, 1] + keep[:, 3]).max()
        if (x1 - x0, y1 - y0) != binary.shape[::-1]:
            scale = max(h, w) / WORK
            cx0, cy0 = int(x0 * scale), int(y0 * scale)
            cx1, cy1 = min(w, int(np.ceil(x1 * scale))), min(h, int(np.ceil(y1 * scale)))
            crop = crop[cy0:cy1, cx0:cx1]
            work = _stretch(_ink(_to_work(crop), background))
            _, binary = cv2.threshold(work, 96, 255, cv2.THRESH_BINARY)

    # 3. Bring the stroke width into MNIST's range: a fine pen or a fat brush at this scale
    #    would otherwise vanish or fill the digit's holes once it is 20 pixels tall.
    width = _stroke_width(binary)
    if width < STROKE_MIN:
        work = cv2.dilate(work, _ellipse(int(round(STROKE_MIN + 2 - width)) | 1))
    elif width > STROKE_MAX:
        # Capped: a filled blob measures as enormously wide, and thinning stops at a few pixels.
        work = cv2.erode(work, _ellipse(min(int(round((width - STROKE_MAX) / 2)), MAX_THIN) * 2 + 1))

    # 4. Scale into 20x20 keeping the aspect ratio, then centre by centre of mass in 28x28.
    wh, ww = work.shape
    scale = BOX / max(wh, ww)
    small = cv2.resize(
        work, (max(1, round(ww * scale)), max(1, round(wh * scale))), interpolation=cv2.INTER_AREA
    )
    small = _stretch(small)
    # Centre of mass with NumPy: on a 20x20 array it is cheaper than cv2.moments.
    mass = float(small.sum(dtype=np.int64))
    if mass == 0:
        raise ModelInputError(NOTHING_DRAWN, code="nothing_drawn", status=422)
    rows, cols = small.sum(axis=1, dtype=np.int64), small.sum(axis=0, dtype=np.int64)
    dx = int(round(CENTER - float(cols @ np.arange(len(cols))) / mass))
    dy = int(round(CENTER - float(rows @ np.arange(len(rows))) / mass))
    shift = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(small, shift, (SIZE, SIZE), flags=cv2.INTER_NEAREST, borderValue=0)


class NumbersModel(ServedModel):
    """The MNIST digit classifier: a gray drawing in, the digit and its certainty out."""

    kind = "numbers"
    input_mode = "gray"

    def preprocess(self, pixels: np.ndarray, **options: Any) -> tuple[np.ndarray, None]:
        """Turn a gray uint8 drawing into a (1, 28, 28, 1) float tensor in [0, 1]."""
        digit = to_mnist(pixels)
        return (digit.astype(np.float32) * (1.0 / 255.0)).reshape(1, SIZE, SIZE, 1), None

    def postprocess(self, y: np.ndarray, context: None, *, top: int = 0, **options: Any) -> dict:
        """Return the digit, its certainty in percent (2 decimals) and the `top` best alternatives."""
        probs = np.asarray(y, dtype=np.float64).reshape(-1)
        order = np.argsort(-probs)
        best = int(order[0])
        result: dict[str, Any] = {"prediction": best, "certainty": round(float(probs[best]) * 100, 2)}
        if top:
            result["top"] = [
                {"digit": int(d), "certainty": round(float(probs[d]) * 100, 2)} for d in order[:top]
            ]
        return result
