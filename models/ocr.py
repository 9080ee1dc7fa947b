"""OCR of printed lines (OCR-B digits, GS1 element strings): find lines, cut glyphs, classify each.

The pipeline: polarity and scale estimate -> background flattening and contrast normalisation ->
Otsu binarization -> deskew (projection profile) -> line finding -> glyph segmentation
(connected components, broken pieces merged, touching glyphs split at ink minima) -> one batched
CNN call for every glyph -> lines rebuilt with spaces from the glyph pitch.

`segment()` is also what training/ocr.py uses to cut its training glyphs, so the classifier is
trained on exactly the crops the server produces.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from models import gs1
from models.image import to_gray
from models.runtime import ModelFileError, ModelInputError, ServedModel

# Cap height, in pixels, every image is rescaled to before segmentation.
TARGET_CAP = 32
# Side of the square glyph image the classifier sees.
GLYPH_SIZE = 32
# Side of the window cut around each glyph, in cap heights: keeps size and vertical position
# (a hyphen sits mid-line, an asterisk is raised), which a tight crop would lose.
WINDOW = 1.6
DEFAULT_CHARSET = "0123456789()*<>+-/ABCDEFGHIJKLMNOPQRSTUVWXYZ"
DIGITS = "0123456789"
MAX_GLYPHS = 4000
MAX_SIDE = 4200


@dataclass
class Glyph:
    """One segmented glyph: its box in the working (scaled, deskewed) frame and its input image."""

    x0: int
    y0: int
    x1: int
    y1: int
    image: np.ndarray
    spaces_before: int = 0

    @property
    def cx(self) -> float:
        return (self.x0 + self.x1) / 2


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
        """Stack every glyph image into one (N, 32, 32, 1) float32 batch."""
        images = [g.image for g in self.glyphs]
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
    return cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)


def _cap_height(heights: np.ndarray) -> float:
    """Estimate the cap height from component heights, ignoring specks and the odd big blob."""
    if heights.size == 0:
        return 0.0
    top = np.percentile(heights, 90)
    return float(np.median(heights[heights >= 0.5 * top]))


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


@dataclass
class _Piece:
    """A candidate glyph: component labels, optionally limited to a column range."""

    ids: list[int]
    x0: int
    y0: int
    x1: int
    y1: int
    cut: tuple[int, int] | None = None

    @property
    def w(self) -> int:
        return self.x1 - self.x0

    @property
    def h(self) -> int:
        return self.y1 - self.y0

    @property
    def cx(self) -> float:
        return (self.x0 + self.x1) / 2

    def union(self, other: _Piece) -> _Piece:
        return _Piece(
            self.ids + other.ids,
            min(self.x0, other.x0),
            min(self.y0, other.y0),
            max(self.x1, other.x1),
            max(self.y1, other.y1),
        )


def segment(image: np.ndarray) -> Segmentation:
    """Cut an image of printed text into lines of glyph images, top to bottom, left to right."""
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
    work = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=interp) if abs(scale - 1) > 0.02 else gray
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
    result.lines = [_line_glyphs(pieces, labels) for pieces, labels in _find_lines(binary)]
    result.lines = [line for line in result.lines if line]
    return result


def _find_lines(binary: np.ndarray) -> list[tuple[list[_Piece], np.ndarray]]:
    """Group connected components into text lines by their vertical extent."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if count <= 1:
        return []
    s = stats[1:]
    ids = np.arange(1, count)
    x, y, w, h, area = s[:, 0], s[:, 1], s[:, 2], s[:, 3], s[:, 4]
    rough = _cap_height(h[(area >= 20) & (h >= 6)].astype(float)) or TARGET_CAP
    # Specks, rules and borders are not glyphs.
    keep = (area >= 0.02 * rough**2) & (np.maximum(w, h) >= 0.2 * rough)
    keep &= h <= 3.5 * rough
    keep &= ~((w > 4 * rough) & (h < 0.4 * rough))
    ids, x, y, w, h = ids[keep], x[keep], y[keep], w[keep], h[keep]
    if ids.size == 0:
        return []
    cap = _cap_height(h.astype(float))
    tall = h >= 0.55 * cap
    cover = np.zeros(binary.shape[0] + 1, np.int32)
    for yy, hh in zip(y[tall], h[tall], strict=True):
        cover[yy] += 1
        cover[yy + hh] -= 1
    inside = np.cumsum(cover)[:-1] > 0
    edges = np.flatnonzero(np.diff(np.r_[0, inside.astype(np.int8), 0]))
    bands = list(zip(edges[0::2], edges[1::2], strict=True))
    if not bands:
        return []
    centers = y + h / 2
    members: list[list[int]] = [[] for _ in bands]
    for i, c in enumerate(centers):
        best, dist = -1, 0.6 * cap
        for b, (top, bottom) in enumerate(bands):
            d = 0.0 if top <= c < bottom else min(abs(c - top), abs(c - bottom))
            if d <= dist:
                best, dist = b, d
                if d == 0.0:
                    break
        if best >= 0:
            members[best].append(i)
    lines = []
    for idx in members:
        if not idx:
            continue
        pieces = [
            _Piece([int(ids[i])], int(x[i]), int(y[i]), int(x[i] + w[i]), int(y[i] + h[i])) for i in idx
        ]
        lines.append((pieces, labels))
    return lines


def _line_glyphs(pieces: list[_Piece], labels: np.ndarray) -> list[Glyph]:
    """Merge broken pieces, split touching glyphs, and cut one window per glyph."""
    pieces.sort(key=lambda p: p.x0)
    heights = np.array([p.h for p in pieces], float)
    cap = _cap_height(heights)
    if cap < 4 or max(heights) < 0.55 * cap:
        return []
    # Stacked pieces (a glyph broken across its height) overlap in x.
    merged: list[_Piece] = []
    for p in pieces:
        if merged:
            last = merged[-1]
            overlap = min(last.x1, p.x1) - max(last.x0, p.x0)
            if overlap >= 0.5 * min(last.w, p.w):
                merged[-1] = last.union(p)
                continue
        merged.append(p)
    tall = [p for p in merged if p.h >= 0.6 * cap]
    if not tall:
        return []
    char_w = float(np.median([p.w for p in tall]))
    pitch = _pitch(tall, cap, char_w)
    if char_w > 1.2 * pitch:  # most glyphs touch: widths say nothing about single glyphs
        char_w = 0.7 * pitch
    # Side-by-side fragments of one glyph fit within one glyph width together.
    joined: list[_Piece] = []
    for p in merged:
        if joined:
            last = joined[-1]
            if (
                p.x1 - last.x0 <= 1.05 * char_w
                and p.x0 - last.x1 <= 0.2 * cap
                and (last.h < 0.9 * cap or p.h < 0.9 * cap)
            ):
                joined[-1] = last.union(p)
                continue
        joined.append(p)
    # The smallest glyph of the charset (a hyphen) is over a quarter of the cap height long.
    joined = [p for p in joined if max(p.w, p.h) >= 0.25 * cap]
    final: list[_Piece] = []
    for p in joined:
        if p.w > 1.3 * pitch:
            final.extend(_split(p, labels, pitch, char_w))
        else:
            final.append(p)
    tall = [p for p in final if p.h >= 0.6 * cap]
    top = float(np.median([p.y0 for p in tall])) if tall else min(p.y0 for p in final)
    base = float(np.median([p.y1 for p in tall])) if tall else max(p.y1 for p in final)
    line_cap = max(4.0, base - top)
    mid = (top + base) / 2
    glyphs = []
    previous = None
    for p in final:
        image = _glyph_image(p, labels, mid, line_cap)
        if image is None:
            continue
        g = Glyph(p.x0, p.y0, p.x1, p.y1, image)
        if previous is not None:
            step = g.cx - previous.cx
            if step > 1.5 * pitch:
                g.spaces_before = max(1, int(round(step / pitch)) - 1)
        glyphs.append(g)
        previous = g
    return glyphs


def _pitch(tall: list[_Piece], cap: float, char_w: float) -> float:
    """Estimate the distance between neighbouring glyph centres (the font's advance)."""
    steps = np.diff([p.cx for p in tall])
    steps = steps[steps > 0.3 * cap]
    if steps.size >= 2:
        typical = float(np.median(steps))
        close = steps[steps < 1.45 * typical]
        if close.size:
            return float(np.median(close))
    return max(0.95 * cap, 1.3 * char_w)


def _split(p: _Piece, labels: np.ndarray, pitch: float, char_w: float) -> list[_Piece]:
    """Split touching glyphs at the columns with the least ink near each expected boundary."""
    n = max(2, int(round((p.w + pitch - char_w) / pitch)))
    region = np.isin(labels[p.y0 : p.y1, p.x0 : p.x1], p.ids)
    profile = region.sum(axis=0).astype(float)
    cuts = [0]
    for k in range(1, n):
        expect = k * p.w / n
        lo = int(max(cuts[-1] + 1, expect - 0.3 * pitch))
        hi = int(min(p.w - 1, expect + 0.3 * pitch))
        if hi <= lo:
            continue
        window = profile[lo:hi]
        # Least ink first; among equals, the column nearest the expected boundary.
        order = np.lexsort((np.abs(np.arange(lo, hi) - expect), window))
        cuts.append(lo + int(order[0]))
    cuts.append(p.w)
    out = []
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        rows = np.flatnonzero(region[:, a:b].any(axis=1))
        if rows.size == 0 or b - a < 2:
            continue
        out.append(
            _Piece(
                p.ids, p.x0 + a, p.y0 + int(rows[0]), p.x0 + b, p.y0 + int(rows[-1]) + 1, (p.x0 + a, p.x0 + b)
            )
        )
    return out or [p]


def _glyph_image(p: _Piece, labels: np.ndarray, mid: float, cap: float) -> np.ndarray | None:
    """Cut a square window around a glyph (its own pixels only), resized to GLYPH_SIZE."""
    side = int(round(max(WINDOW * cap, 1.1 * p.w, 1.1 * p.h)))
    cx = int(round(p.cx))
    cy = int(round(mid)) if abs(p.y0 + p.h / 2 - mid) < 0.6 * side - p.h / 2 else int(round(p.y0 + p.h / 2))
    wx0, wy0 = cx - side // 2, cy - side // 2
    canvas = np.zeros((side, side), np.float32)
    sx0, sy0 = max(wx0, 0), max(wy0, 0)
    sx1, sy1 = min(wx0 + side, labels.shape[1]), min(wy0 + side, labels.shape[0])
    if sx1 <= sx0 or sy1 <= sy0:
        return None
    crop = np.isin(labels[sy0:sy1, sx0:sx1], p.ids)
    if p.cut is not None:
        a, b = p.cut
        cols = np.arange(sx0, sx1)
        crop &= ((cols >= a) & (cols < b))[None, :]
    if not crop.any():
        return None
    canvas[sy0 - wy0 : sy1 - wy0, sx0 - wx0 : sx1 - wx0] = crop
    return cv2.resize(canvas, (GLYPH_SIZE, GLYPH_SIZE), interpolation=cv2.INTER_AREA)


def read_charset(path: Path, metadata: dict[str, str]) -> str:
    """Return the model's charset: ONNX metadata first, then ocr_charset.txt beside the model."""
    if metadata.get("charset"):
        return metadata["charset"]
    text_file = Path(path).with_name(Path(path).stem + "_charset.txt")
    if text_file.is_file():
        return text_file.read_text(encoding="utf-8").strip("\n")
    return DEFAULT_CHARSET


class OcrModel(ServedModel):
    """Read printed lines: every line's text, per-character confidences and boxes, GS1 fields."""

    kind = "ocr"
    input_mode = "gray"

    def __init__(self, name: str, path: Path, *, threads: int = 1, **options: Any):
        super().__init__(name, path, threads=threads, **options)
        meta = self.onnx.session.get_modelmeta().custom_metadata_map
        self.charset = read_charset(self.path, meta)
        classes = self.onnx.session.get_outputs()[0].shape[-1]
        if isinstance(classes, int) and classes != len(self.charset):
            raise ModelFileError(f"{self.path} has {classes} classes but its charset has {len(self.charset)}")
        self.digit_index = np.array([self.charset.index(d) for d in DIGITS])

    def preprocess(self, pixels: np.ndarray, **options: Any) -> tuple[np.ndarray, Segmentation]:
        """Cut an image into glyphs (see `segment`): their batch, and the segmentation to rebuild lines."""
        seg = segment(pixels)
        if len(seg.glyphs) > MAX_GLYPHS:
            raise ModelInputError(
                f"the image holds {len(seg.glyphs)} glyphs, over the {MAX_GLYPHS} limit; crop it to the lines to read",
                "too_much_text",
                422,
            )
        return seg.tensor(), seg

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Classify a batch of glyphs in one ONNX Runtime call."""
        if x.shape[0] == 0:
            return np.zeros((0, len(self.charset)), np.float32)
        return self.onnx.run(x)

    def postprocess(self, y: np.ndarray, seg: Segmentation, *, format: str = "text", **options: Any) -> dict:
        """Turn glyph probabilities into lines of text, characters, digits and GS1 fields."""
        probs = np.asarray(y, np.float32)
        best = probs.argmax(axis=1) if len(probs) else np.zeros(0, int)
        lines, characters, digit_probs = [], [], []
        i = 0
        for glyphs in seg.lines:
            text, chars = [], []
            for g in glyphs:
                char = self.charset[best[i]]
                text.append(" " * g.spaces_before + char)
                chars.append(
                    {"char": char, "confidence": round(float(probs[i, best[i]]), 4), "box": seg.box(g)}
                )
                if char in DIGITS:
                    d = probs[i, self.digit_index]
                    digit_probs.append([round(float(v), 6) for v in d / max(float(d.sum()), 1e-9)])
                i += 1
            line_text = "".join(text)
            boxes = np.array([c["box"] for c in chars])
            x0, y0 = boxes[:, 0].min(), boxes[:, 1].min()
            x1, y1 = (boxes[:, 0] + boxes[:, 2]).max(), (boxes[:, 1] + boxes[:, 3]).max()
            lines.append(
                {
                    "text": line_text,
                    "digits": "".join(c for c in line_text if c in DIGITS),
                    "confidence": min(c["confidence"] for c in chars),
                    "box": [int(x0), int(y0), int(x1 - x0), int(y1 - y0)],
                    "characters": chars,
                    "fields": gs1.parse(line_text),
                }
            )
            characters.extend(chars)
        text = "\n".join(line["text"] for line in lines)
        fields = next((line["fields"] for line in lines if line["fields"]), {})
        result = {
            "text": text,
            "digits": "".join(line["digits"] for line in lines),
            "confidence": min((c["confidence"] for c in characters), default=0.0),
            "characters": characters,
            "lines": lines,
            "fields": fields,
            "deskew_degrees": seg.angle,
            "inverted": seg.inverted,
        }
        if format == "probabilities":
            # The original service's answer: for each digit, its 10 probabilities (0-9).
            result["probabilities"] = digit_probs
        return result

    def warmup_input(self) -> np.ndarray:
        return np.zeros((1, GLYPH_SIZE, GLYPH_SIZE, 1), np.float32)

    def describe(self) -> dict:
        return {**super().describe(), "charset": self.charset}
