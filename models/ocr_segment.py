"""Find the text lines of an image: polarity, scale, lighting, binarization, deskew, line bands.

`segment()` runs the whole cut: polarity and scale estimate -> background flattening and contrast
normalisation -> Otsu binarization -> printed rules removed -> deskew (projection profile) -> line
groups from the components' vertical extent -> each group's rows fitted a cap band (models.ocr_line)
-> glyphs cut inside each band. It is also what training/ocr.py uses to cut its training glyphs,
so the classifier is trained on exactly the crops the server produces.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from models.image import to_gray
from models.ocr_band import TooMuchText
from models.ocr_line import (
    GLYPH_SIZE,
    Band,
    Glyph,
    band_pieces,
    cap_height,
    fit_rows,
    line_glyphs,
)
from models.runtime import ModelInputError

# Cap height, in pixels, every image is rescaled to before segmentation.
TARGET_CAP = 32
MAX_SIDE = 4200
# Limits that keep a hostile image's cost bounded (segment's `max_glyphs`): a glyph of degraded print
# breaks into a few components at most, and a page's line holds a few rows side by side (columns,
# a table), never this many. Past either, the image is refused as too much text.
COMPONENTS_PER_GLYPH = 3
MAX_ROWS = 64


@dataclass
class Segmentation:
    """Every line's glyphs, and how the working frame maps back to the input image."""

    lines: list[list[Glyph]] = field(default_factory=list)
    inverse: np.ndarray = field(default_factory=lambda: np.array([[1.0, 0, 0], [0, 1.0, 0]]))
    size: tuple[int, int] = (0, 0)
    angle: float = 0.0
    scale: float = 1.0
    inverted: bool = False

    @property
    def glyphs(self) -> list[Glyph]:
        return [g for line in self.lines for g in line]

    def tensor(self) -> np.ndarray:
        """Stack every glyph image, then the tight windows of those that have one, into one float32 batch."""
        glyphs = self.glyphs
        images = [g.image for g in glyphs] + [g.tight for g in glyphs if g.tight is not None]
        if not images:
            return np.zeros((0, GLYPH_SIZE, GLYPH_SIZE, 1), np.float32)
        return np.stack(images)[..., None].astype(np.float32)

    def box(self, g: Glyph) -> list[int]:
        """Return a glyph's [x, y, w, h] box in input-image pixels."""
        corners = np.array([[g.x0, g.y0, 1], [g.x1, g.y0, 1], [g.x0, g.y1, 1], [g.x1, g.y1, 1]], float)
        pts = corners @ self.inverse.T
        width, height = self.size
        x0 = int(np.clip(np.floor(pts[:, 0].min()), 0, width))
        y0 = int(np.clip(np.floor(pts[:, 1].min()), 0, height))
        x1 = int(np.clip(np.ceil(pts[:, 0].max()), 0, width))
        y1 = int(np.clip(np.ceil(pts[:, 1].max()), 0, height))
        return [x0, y0, max(1, x1 - x0), max(1, y1 - y0)]


def smooth(f: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur with a large sigma, computed on a shrunken copy: cheap at any sigma."""
    factor = min(1.0, 3.0 / sigma)
    if factor >= 1.0:
        return cv2.GaussianBlur(f, (0, 0), sigma)
    h, w = f.shape
    small = cv2.resize(
        f, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_AREA
    )
    small = cv2.GaussianBlur(small, (0, 0), sigma * factor)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _sample(a: np.ndarray, n: int = 60000) -> np.ndarray:
    """Every k-th pixel, enough for a percentile: full-image percentiles are slow."""
    k = max(1, int(math.sqrt(a.size / n)))
    return a[::k, ::k]


def _light_text(gray: np.ndarray) -> bool:
    """True when the text is lighter than its background: the residual's long tail is bright."""
    small = _shrink(gray, 900)
    f = small.astype(np.float32)
    sigma = max(3.0, min(f.shape) / 4)
    residual = f - smooth(f, sigma)
    lo, mid, hi = np.percentile(_sample(residual), [2, 50, 98])
    return bool((hi - mid) > (mid - lo))


def _shrink(gray: np.ndarray, side: int) -> np.ndarray:
    scale = side / max(gray.shape)
    if scale >= 1:
        return gray
    return _scaled(gray, scale, cv2.INTER_AREA)


def _scaled(gray: np.ndarray, scale: float, interpolation: int) -> np.ndarray:
    """Resize by `scale`, never to nothing: a side that would round to 0 pixels (an 8x40000 strip
    shrunk to 900 px) is kept at 1."""
    h, w = gray.shape[:2]
    if round(h * scale) >= 1 and round(w * scale) >= 1:
        return cv2.resize(gray, None, fx=scale, fy=scale, interpolation=interpolation)
    return cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=interpolation)


def estimate_cap(gray: np.ndarray) -> float:
    """Estimate the text cap height (pixels) of an ink-dark image from a high-passed binarization."""
    small = _shrink(gray, 1600)
    factor = gray.shape[1] / small.shape[1]
    # A light blur first: scan noise otherwise makes thousands of specks that swamp the glyphs.
    f = cv2.GaussianBlur(small.astype(np.float32), (0, 0), 1.0)
    residual = f - smooth(f, max(4.0, min(f.shape) / 3))
    u8 = np.clip(residual + 128, 0, 255).astype(np.uint8)
    _, binary = cv2.threshold(u8, 0, 1, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    _, _, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    x, y, w, h, area = (stats[1:, i] for i in range(5))
    rows, cols = small.shape
    # Shadows and lighting edges make blobs along the borders; a glyph touches at most two.
    borders = (x == 0).astype(int) + (y == 0) + (x + w == cols) + (y + h == rows)
    keep = (area >= 6) & (h >= 3) & ~((w > 0.5 * cols) & (w > 4 * h)) & (borders < 3)
    h, area = h[keep].astype(float), area[keep].astype(float)
    if h.size == 0:
        return 0.0
    # The height that half the ink lies in glyphs of: glyphs are few but big, specks many but small.
    order = np.argsort(h)
    cumulative = np.cumsum(area[order])
    typical = h[order][np.searchsorted(cumulative, cumulative[-1] * 0.5)]
    return float(np.median(h[h >= 0.5 * typical])) * factor


def flatten(gray: np.ndarray, cap: float) -> np.ndarray:
    """Divide out uneven lighting (a closing removes the ink) and stretch contrast to 0..255."""
    k = max(3, int(round(cap * 0.9)) | 1)
    background = cv2.morphologyEx(gray, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (k, k)))
    background = smooth(background.astype(np.float32), cap / 4)
    ratio = gray.astype(np.float32) / np.maximum(background, 1.0)
    lo = float(np.percentile(_sample(ratio), 0.5))
    out = (ratio - lo) / max(1e-3, 1.0 - lo)
    return np.clip(out * 255, 0, 255).astype(np.uint8)


def binarize(norm: np.ndarray, level: float | None = None) -> tuple[np.ndarray, float]:
    """Otsu (or a given level) on the flattened image; adaptive when Otsu marks most pixels as ink."""
    # A blur of a thirtieth of the cap height takes scan noise out and keeps every stroke.
    norm = cv2.GaussianBlur(norm, (0, 0), TARGET_CAP / 30)
    if level is not None:
        return (norm <= level).astype(np.uint8), level
    level, binary = cv2.threshold(norm, 0, 1, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    if binary.mean() > 0.45:
        binary = cv2.adaptiveThreshold(
            norm, 1, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY_INV, 2 * TARGET_CAP + 1, 12
        )
    return binary, float(level)


def skew_angle(binary: np.ndarray, limit: float = 6.0) -> float:
    """Find the text angle (degrees) that makes the row profile of the ink sharpest."""
    ys, xs = np.nonzero(binary)
    if ys.size < 50:
        return 0.0
    if ys.size > 40000:
        pick = np.random.default_rng(0).choice(ys.size, 40000, replace=False)
        ys, xs = ys[pick], xs[pick]
    ys = ys.astype(np.float64)
    xs = xs.astype(np.float64) - xs.mean()

    def score(deg: float) -> float:
        t = math.radians(deg)
        v = ys * math.cos(t) - xs * math.sin(t)
        counts = np.bincount((v - v.min()).astype(np.int64))
        return float(np.dot(counts, counts))

    coarse = np.arange(-limit, limit + 1e-9, 0.5)
    best = max(coarse, key=score)
    fine = np.arange(best - 0.5, best + 0.5 + 1e-9, 0.1)
    return float(max(fine, key=score))


def _rotate(image: np.ndarray, angle: float, border: int) -> tuple[np.ndarray, np.ndarray]:
    """Rotate so a line at `angle` degrees becomes horizontal, growing the canvas to keep every pixel."""
    h, w = image.shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = int(math.ceil(h * sin + w * cos)), int(math.ceil(h * cos + w * sin))
    m[0, 2] += nw / 2 - w / 2
    m[1, 2] += nh / 2 - h / 2
    out = cv2.warpAffine(image, m, (nw, nh), flags=cv2.INTER_LINEAR, borderValue=border)
    return out, m


def segment(image: np.ndarray, max_glyphs: int | None = None) -> Segmentation:
    """Cut an image of printed text into lines of glyph images, top to bottom, left to right.

    With `max_glyphs`, an image holding more glyphs is refused (422 too_much_text) as soon as the
    lines found so far hold more, before the rest are cut: a page of text, or noise that binarizes
    into thousands of specks, costs a fraction of what cutting it all would.
    """
    gray = to_gray(image)
    height, width = gray.shape
    if min(height, width) < 8:
        raise ModelInputError(
            f"the image is {width}x{height} pixels; OCR needs at least 8x8", "image_too_small", 422
        )
    result = Segmentation(size=(width, height))
    inverted = _light_text(gray)
    if inverted:
        gray = 255 - gray
    result.inverted = inverted
    if float(gray.max()) - float(gray.min()) < 8:
        return result  # a blank image: no text to read
    cap = estimate_cap(gray)
    if cap < 3:
        return result
    scale = float(np.clip(TARGET_CAP / cap, 0.1, 8.0))
    scale = min(scale, MAX_SIDE / max(height, width))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    work = _scaled(gray, scale, interp) if abs(scale - 1) > 0.02 else gray
    cap_work = cap * scale
    norm = flatten(work, cap_work)
    binary, level = binarize(norm)
    angle = skew_angle(binary)
    forward = np.array([[scale, 0, 0], [0, scale, 0]], float)
    if abs(angle) >= 0.2:
        # Fill the new corners with paper, and keep the level: Otsu would split paper from fill.
        norm, rot = _rotate(norm, angle, int(np.median(_sample(norm))))
        binary, _ = binarize(norm, level)
        forward = np.vstack([rot, [0, 0, 1]]) @ np.vstack([forward, [0, 0, 1]])
        forward = forward[:2]
    result.inverse = cv2.invertAffineTransform(forward)
    result.angle = round(angle, 2)
    result.scale = round(scale, 4)
    binary = _drop_rules(binary, cap_work)
    lines = []
    count = 0
    try:
        for band, line_cap in _find_lines(binary, max_glyphs):
            pieces, labels, offset, cut = band_pieces(binary, band, line_cap, result.inverse, result.size)
            glyphs = line_glyphs(
                pieces, labels, band, offset, None if max_glyphs is None else max_glyphs - count
            )
            count += len(glyphs)
            if glyphs:
                lines.append((float(np.mean(band.at((band.x0 + band.x1) / 2))), cut, glyphs))
    except TooMuchText:
        raise ModelInputError(
            f"the image holds over {max_glyphs} glyphs; crop it to the lines to read", "too_much_text", 422
        ) from None
    # A line cut by the image's edge is other print a band was cut from, when a whole line is there too.
    if any(cut < 0.5 for _, cut, _ in lines):
        lines = [line for line in lines if line[1] < 0.5]
    result.lines = [glyphs for _, _, glyphs in sorted(lines, key=lambda line: line[0])]
    return result


def _drop_rules(binary: np.ndarray, cap: float) -> np.ndarray:
    """Remove printed rules: thin horizontal runs over three cap heights long (no glyph has one).

    Kernels are at least 1 px (a cap shrunk under 4 px, as in a strip thousands of times longer
    than it is high, made a 0-px kernel, which OpenCV refuses).
    """
    long = cv2.morphologyEx(
        binary, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (max(1, int(3 * cap)), 1))
    )
    if not long.any():
        return binary
    thick = cv2.morphologyEx(
        long, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (1, max(1, int(0.3 * cap))))
    )
    return binary & (1 - (long & (1 - thick)))


def _find_lines(binary: np.ndarray, max_glyphs: int | None = None) -> list[tuple[Band, float]]:
    """Group connected components by vertical extent, and fit a band to each row of every group.

    With `max_glyphs`, an image of more than COMPONENTS_PER_GLYPH times as many glyph-sized
    components, or a group of more than MAX_ROWS rows side by side, raises TooMuchText.
    """
    count, _, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if count <= 1:
        return []
    s = stats[1:]
    x, y, w, h, area = s[:, 0], s[:, 1], s[:, 2], s[:, 3], s[:, 4]
    rough = cap_height(h[(area >= 20) & (h >= 6)].astype(float)) or TARGET_CAP
    # Specks, rules and borders are not glyphs.
    keep = (area >= 0.02 * rough**2) & (np.maximum(w, h) >= 0.2 * rough)
    keep &= h <= 3.5 * rough
    keep &= ~((w > 4 * rough) & (h < 0.4 * rough))
    x, y, w, h = x[keep], y[keep], w[keep], h[keep]
    if x.size == 0:
        return []
    if max_glyphs is not None and x.size > COMPONENTS_PER_GLYPH * max_glyphs:
        raise TooMuchText(f"{x.size} glyph-sized components")
    cap = cap_height(h.astype(float))
    tall = h >= 0.55 * cap
    cover = np.zeros(binary.shape[0] + 1, np.int32)
    for yy, hh in zip(y[tall], h[tall], strict=True):
        cover[yy] += 1
        cover[yy + hh] -= 1
    inside = np.cumsum(cover)[:-1] > 0
    edges = np.flatnonzero(np.diff(np.r_[0, inside.astype(np.int8), 0]))
    out = []
    for top, bottom in zip(edges[0::2], edges[1::2], strict=True):
        idx = np.flatnonzero((y + h / 2 >= top) & (y + h / 2 < bottom))
        if idx.size == 0:
            continue
        group_cap = cap_height(h[idx].astype(float))
        bands = fit_rows(x[idx], y[idx], w[idx], h[idx], group_cap, None if max_glyphs is None else MAX_ROWS)
        out.extend((band, group_cap) for band in bands)
    return out
