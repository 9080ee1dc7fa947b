"""The doodle classifier: a canvas drawing, made to look like a Quick, Draw! bitmap, named by a small CNN."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from models.classifier import Classifier
from models.image import to_gray
from models.runtime import ModelInputError

SIZE = 28
# Google rendered every numpy_bitmap from strokes scaled so their long side spans 255 units of a
# 256-unit box, with a 16-unit round pen and 16 + 8 units of padding around the box: 304 units
# -> 28 px, centred. Measured on 6140 of the bitmaps, this fits: the ink covers pixels 1-26 on the
# long side in 99.9% of them (edge pixels at 38% of full on average), centre lines 2-25.
CENTRE_SPAN = 255 * SIZE / 304  # 23.5 px: the long side of the centre lines
STROKE_WIDTH = 16 * SIZE / 304  # 1.47 px: the pen
# Bitmap-sized uploads (no centre lines to find) are only cropped and scaled: ink to 26 px.
LONG_SIDE = 26
# Strokes are drawn at this multiple of the final size, then area-averaged down, which gives
# the soft anti-aliased edges the dataset has.
OVERSAMPLE = 4
# Below this contrast (0..255) against the background nothing counts as drawn (JPEG noise, paper grain).
MIN_CONTRAST = 40


def _ink(gray: np.ndarray) -> np.ndarray:
    """Return the strokes cropped to their bounding box, float32 0..1, white on black, either polarity in."""
    g = to_gray(gray, order="RGB")
    if g.size == 0:
        raise ModelInputError("Expected a 2-D grayscale drawing.", code="bad_image")
    # The background is what most of the border shows: light canvas with dark strokes, or the reverse.
    border = np.concatenate([g[0], g[-1], g[:, 0], g[:, -1]])
    background = int(np.median(border))
    level = np.full_like(g, background)
    ink = cv2.subtract(level, g) if background >= 128 else cv2.subtract(g, level)
    peak = int(ink.max())
    if peak < MIN_CONTRAST:
        # A well-formed image with nothing to classify: 422, as /api/predict answers it.
        raise ModelInputError("Nothing drawn: the canvas is empty.", code="nothing_drawn", status=422)
    # Faint edge pixels count (the dataset box includes them); noise under 4% of the peak does not.
    x, y, w, h = cv2.boundingRect(cv2.threshold(ink, peak * 0.04, 255, cv2.THRESH_BINARY)[1])
    # Scale by the strongest stroke so a pale pen colour counts as fully drawn.
    return np.minimum(ink[y : y + h, x : x + w].astype(np.float32) / peak, 1.0)


def _thinning_tables() -> np.ndarray:
    """Tabulate Zhang-Suen's deletion rule for both sub-steps over all 256 neighbourhoods."""
    tables = np.zeros((2, 256), dtype=bool)
    for code in range(256):
        p2, p3, p4, p5, p6, p7, p8, p9 = ((code >> i) & 1 for i in range(8))
        ring = (p2, p3, p4, p5, p6, p7, p8, p9, p2)
        neighbours = sum(ring[:8])
        transitions = sum(ring[i] == 0 and ring[i + 1] == 1 for i in range(8))
        core = 2 <= neighbours <= 6 and transitions == 1
        tables[0, code] = core and p2 * p4 * p6 == 0 and p4 * p6 * p8 == 0
        tables[1, code] = core and p2 * p4 * p8 == 0 and p2 * p6 * p8 == 0
    return tables


_THINNING = _thinning_tables().astype(np.uint8)
# Neighbours P2..P9 clockwise from north, weighted 1, 2, ..., 128: one 3x3 correlation packs a
# pixel's neighbourhood into the byte the tables are indexed by.
_NEIGHBOURS = np.array([[128, 1, 2], [64, 0, 4], [32, 16, 8]], np.float32)


def thin(mask: np.ndarray) -> np.ndarray:
    """Reduce a binary drawing to 1-px-wide strokes (Zhang-Suen thinning)."""
    # OpenCV's filter and table lookup instead of eight shifted NumPy copies per sub-step: the same
    # pixels (tests/models/test_doodles.py keeps the NumPy version to compare), 0.53 against
    # 0.79 ms per canvas of the bench's doodles (12-16 sub-steps each).
    img = np.ascontiguousarray(mask, dtype=np.uint8)
    changed = True
    while changed:
        changed = False
        for table in _THINNING:
            code = cv2.filter2D(img, -1, _NEIGHBOURS, borderType=cv2.BORDER_CONSTANT)
            remove = cv2.LUT(code, table) & img  # every removal decided on the same image
            if cv2.countNonZero(remove):
                img = cv2.subtract(img, remove)
                changed = True
    return img.astype(bool)


def stroke_width(mask: np.ndarray) -> float:
    """Estimate the mean stroke width of a binary drawing: area / (contour length / 2)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    length = sum(cv2.arcLength(c, True) for c in contours) / 2.0
    return float(mask.sum() / max(length, 1.0))


def pen_width(mask: np.ndarray, skeleton: np.ndarray) -> float:
    """Estimate a drawing's own pen width in px: twice the depth of its centre lines, less one."""
    inside = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    # Median, so filled areas do not count; a centre pixel of a w-px line lies (w + 1) / 2 from
    # the background.
    return max(1.0, 2.0 * float(np.median(inside[skeleton])) - 1.0) if skeleton.any() else 1.0


def restroke(
    mask: np.ndarray,
    diameter: float,
    *,
    skeleton: np.ndarray | None = None,
    width: float | None = None,
    grow: bool = True,
) -> np.ndarray:
    """Redraw a binary drawing with a round pen `diameter` px wide; filled areas stay filled.

    Returns float32 ink 0..1 with anti-aliased edges, padded so a wider pen is not clipped.
    Lines are re-inked along their centre lines (thinning); areas wider than the drawing's own
    pen (a coloured-in eye, a filled wheel) are kept by shrinking or growing the outline by the
    difference between the two pen widths.
    """
    if skeleton is None:
        skeleton = thin(mask)
    pad = int(np.ceil(diameter)) + 2
    mask = np.pad(mask, pad)
    skeleton = np.pad(skeleton, pad)
    if not skeleton.any():
        return np.zeros(mask.shape, np.float32)
    inside = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    to_centre = cv2.distanceTransform((~skeleton).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    if width is None:
        width = pen_width(mask, skeleton)
    # With grow=False outlines only shrink: growing them by an estimated (whole-pixel) width
    # overshoots (1.72 px instead of 1.47 for a bitmap pen), and the centre lines carry a wider pen.
    change = width - diameter if grow else max(width - diameter, 0.0)
    if change >= 0:
        # Nothing outside the outline is inked (a background pixel lies 1 px or more from it, so
        # its signed depth is -0.5 or less): the distance out of the drawing is not needed, which
        # saves a quarter of the served path's distance transforms.
        signed = np.where(mask, inside - 0.5, np.float32(-0.5))
    else:
        outside = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        signed = np.where(mask, inside - 0.5, 0.5 - outside)  # >0 inside, edge at 0
    shape = np.clip(signed - change / 2 + 0.5, 0.0, 1.0)
    lines = np.clip(diameter / 2 + 0.5 - to_centre, 0.0, 1.0)
    return np.maximum(shape, lines).astype(np.float32)


def to_bitmap(gray: np.ndarray) -> np.ndarray:
    """Make a drawing look like a Quick, Draw! bitmap: 28x28 uint8, white strokes on black.

    Finds the strokes' centre lines and redraws them as Google rendered the dataset: centre
    lines scaled (aspect kept) to 23.5 px on the long side, centred, a 1.47-px round pen,
    anti-aliased by area averaging.
    """
    crop = _ink(gray)
    if max(crop.shape) <= 2 * LONG_SIDE:
        # Already bitmap-sized (an uploaded 28x28 doodle): too few pixels to find centre lines
        # in, so only crop, scale and centre it.
        return _fit(crop)
    # Work at ~104 px on the long side: enough to thin strokes cleanly, small enough to be fast.
    work = OVERSAMPLE * LONG_SIDE
    scale = work / max(crop.shape)
    size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    # A low threshold keeps pen lines thinner than one working pixel connected after downscaling;
    # relative to the darkest pixel, as a hairline on a large canvas keeps only a tenth of its ink.
    ink = cv2.resize(crop, size, interpolation=interpolation)
    ink /= max(float(ink.max()), 1e-6)
    mask = ink >= 0.2
    skeleton = thin(mask)
    if not skeleton.any():  # a dot too small to thin: keep its centre
        skeleton[mask.shape[0] // 2, mask.shape[1] // 2] = True
    # Width and outline from the half-ink level, where the pen's edge is (the 0.2 mask is wider).
    # Hairlines on a large canvas never reach half ink after downscaling: keep the low threshold.
    if (skeleton & (ink >= 0.5)).any():
        mask = ink >= 0.5
        skeleton &= mask
    # +1: the median depth reads an even width one short, and a width read too wide only erodes
    # outlines further, which the centre lines re-ink at the new pen (pen 40 on a 500-px circle:
    # 1.72 px instead of 1.47 without it).
    width = pen_width(mask, skeleton) + 1.0
    # The centre lines' box is the ink box less half a pen on every side (thinning shortens line
    # ends, so the skeleton's own box would be too small by a pen width).
    ys, xs = np.nonzero(mask)
    span = max(ys.max() - ys.min(), xs.max() - xs.min()) + 1 - width
    f = CENTRE_SPAN / max(span, 1.0)  # working px -> bitmap px
    strokes = restroke(mask, STROKE_WIDTH / f, skeleton=skeleton, width=width, grow=False)
    # Redrawn strokes span centre lines + pen; filled blobs at the edge can reach further (their
    # depth reads as a wide pen), so the inked box is held to what Google's gives: 23.5 + 1.47 px.
    ys, xs = np.nonzero(strokes >= 0.5)
    inked = max(ys.max() - ys.min(), xs.max() - xs.min()) + 1
    f = min(f, (CENTRE_SPAN + STROKE_WIDTH) / inked)
    # Centre the inked box in the oversampled bitmap, then area-average it down.
    k = f * OVERSAMPLE
    big = SIZE * OVERSAMPLE
    cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
    centre = (big - 1) / 2
    warp = np.float32([[k, 0, centre - k * cx], [0, k, centre - k * cy]])
    drawn = cv2.warpAffine(strokes, warp, (big, big), flags=cv2.INTER_LINEAR, borderValue=0.0)
    small = cv2.resize(drawn, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    return np.clip(np.rint(small * 255.0), 0, 255).astype(np.uint8)


def _fit(strokes: np.ndarray) -> np.ndarray:
    """Crop ink 0..1 to its box, scale the long side to 26 px (aspect kept), centre it in 28x28."""
    ys, xs = np.nonzero(strokes > 0)
    strokes = strokes[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    h, w = strokes.shape
    f = LONG_SIDE / max(h, w)
    nh, nw = max(1, round(h * f)), max(1, round(w * f))
    interpolation = cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR
    small = cv2.resize(strokes, (nw, nh), interpolation=interpolation)
    out = np.zeros((SIZE, SIZE), np.float32)
    top, left = (SIZE - nh) // 2, (SIZE - nw) // 2
    out[top : top + nh, left : left + nw] = small
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)


class DoodleModel(Classifier):
    """Classify a drawing as one of the Quick, Draw! classes the CNN was trained on."""

    kind = "doodle"
    input_mode = "gray"
    made_for = "drawings"

    def preprocess(self, pixels: np.ndarray, **options: Any) -> tuple[np.ndarray, None]:
        """Turn a grayscale drawing (either polarity) into a (1, 28, 28, 1) float32 bitmap, 0..255."""
        return to_bitmap(pixels).astype(np.float32)[None, :, :, None], None

    def describe(self) -> dict:
        """Describe the model, with its labels file and class count."""
        return {**super().describe(), "classes": len(self.labels)}
