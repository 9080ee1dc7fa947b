"""Drawing Google's simplified Quick, Draw! strokes: as its bitmaps were made, and on a canvas as the page sends them.

Used by training/doodle_strokes.py (the checks) and its tests.
"""

from __future__ import annotations

import cv2
import numpy as np

SIZE = 28
BOX = 256  # Google's stroke box: simplified coordinates run 0..255
# Google's recipe (line diameter and padding in box units): 256 + 2 * 16 + 16 = 304 units -> 28 px.
LINE, PAD = 16.0, 16.0
# Fine samples per output pixel (each axis) for the reference rasterizer; with its one-sample soft
# edge, 4 reproduces 8 within 0.1 grey level on the fixture.
FINE = 4
# The doodle page (static/js/doodle.js, drawpad.js, classifier.css): a square pad at most 420 CSS
# px wide, pen 12 px at 280 CSS px (scaled with the pad), sent as a 280-px transparent PNG snapshot.
PAGE_CSS, PAGE_DPR, PAGE_PEN, SNAPSHOT = 420, 2, 12.0, 280
FILL = 0.7  # the drawing's long side (pen included) as a fraction of the canvas
SUPERSAMPLE = 16  # cv2's sub-pixel shift: 4 bits


def strokes(drawing: list) -> list[np.ndarray]:
    """Return a drawing's strokes as (n, 2) float arrays of x, y."""
    return [np.stack([np.asarray(s[0], float), np.asarray(s[1], float)], axis=1) for s in drawing]


def _coverage(points: np.ndarray, n: int, radius: float) -> tuple[np.ndarray, tuple[slice, slice]]:
    """Return a round pen's coverage (0..1, soft one-sample edge) along a polyline on an n x n grid.

    Only the polyline's box (plus the pen) is computed; the slices say where it lies in the grid.
    """
    lo = np.clip(np.floor(points.min(axis=0) - radius - 1).astype(int), 0, n)
    hi = np.clip(np.ceil(points.max(axis=0) + radius + 1).astype(int), 0, n)
    xs, ys = np.arange(lo[0], hi[0]) + 0.5, np.arange(lo[1], hi[1]) + 0.5
    grid = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
    a = points[:-1] if len(points) > 1 else points
    b = points[1:] if len(points) > 1 else points
    ab = b - a
    # Distance from every grid point to every segment (a dot when a == b).
    t = ((grid[:, None, :] - a[None]) * ab[None]).sum(-1) / np.maximum((ab**2).sum(-1), 1e-12)[None]
    near = a[None] + np.clip(t, 0.0, 1.0)[..., None] * ab[None]
    d = np.sqrt(((grid[:, None, :] - near) ** 2).sum(-1)).min(axis=1)
    cover = np.clip(radius - d + 0.5, 0.0, 1.0).reshape(len(ys), len(xs))
    return cover, (slice(lo[1], hi[1]), slice(lo[0], hi[0]))


def rasterize(
    drawing: list, *, line: float = LINE, pad: float = PAD, centre: bool = True, fine: int = FINE
) -> np.ndarray:
    """Render simplified strokes as Google rendered numpy_bitmap: 28x28 uint8, white on black.

    The 256-unit box plus `pad` on each side and half the `line` diameter beyond that is scaled to
    28 px; with `centre` the strokes' bounding box is centred in the box (else they stay top-left, as
    the simplified coordinates are). Each stroke is drawn with a round pen (caps and joins) and
    composited over the others as separate anti-aliased strokes are.
    """
    scale = SIZE / (BOX + 2 * pad + line)  # box units -> output px
    lines = strokes(drawing)
    offset = np.zeros(2)
    if centre:
        pts = np.concatenate(lines)
        offset = (BOX - (pts.min(axis=0) + pts.max(axis=0))) / 2
    n = SIZE * fine
    radius = line / 2 * scale * fine  # in fine samples
    ink = np.zeros((n, n))
    for p in lines:
        cover, box = _coverage((p + offset + pad + line / 2) * scale * fine, n, radius)
        ink[box] += cover * (1.0 - ink[box])  # OVER: each stroke is stroked on its own
    small = ink.reshape(SIZE, fine, SIZE, fine).mean(axis=(1, 3))
    return np.clip(np.rint(small * 255.0), 0, 255).astype(np.uint8)


def compare(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return per-drawing mean |difference| (grey levels) and Pearson correlation of two bitmap stacks."""
    fa = a.reshape(len(a), -1).astype(np.float64)
    fb = b.reshape(len(b), -1).astype(np.float64)
    mad = np.abs(fa - fb).mean(axis=1)
    ca, cb = fa - fa.mean(axis=1, keepdims=True), fb - fb.mean(axis=1, keepdims=True)
    corr = (ca * cb).sum(axis=1) / np.maximum(np.sqrt((ca**2).sum(axis=1) * (cb**2).sum(axis=1)), 1e-12)
    return mad, corr


def summary(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Return mean and worst MAD and mean correlation of two bitmap stacks."""
    mad, corr = compare(a, b)
    return {"mad": float(mad.mean()), "mad_max": float(mad.max()), "corr": float(corr.mean())}


def canvas_ink(drawing: list, side: int, pen: float, fill: float = FILL) -> np.ndarray:
    """Draw a drawing's ink (0..255) on a `side`-px square canvas with a round `pen`.

    The strokes (straight segments between Google's points, round caps and joins, anti-aliased) are
    scaled so that the drawing with its pen spans `fill` of the canvas, centred.
    """
    lines = strokes(drawing)
    pts = np.concatenate(lines)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    k = (fill * side - pen) / max(float((hi - lo).max()), 1.0)
    origin = (side - (hi - lo) * k) / 2
    paths = [np.rint(((p - lo) * k + origin - 0.5) * SUPERSAMPLE).astype(np.int32) for p in lines]
    ink = np.zeros((side, side), np.uint8)
    cv2.polylines(ink, paths, False, 255, max(1, round(pen)), cv2.LINE_AA, shift=4)
    return ink


def canvas_png(drawing: list, side: int, pen: float, *, transparent: bool, fill: float = FILL) -> bytes:
    """Draw a drawing black on a canvas (`canvas_ink`) as a PNG: on white, or on transparent as toDataURL."""
    return _png(canvas_ink(drawing, side, pen, fill), transparent)


def page_png(drawing: list) -> bytes:
    """Draw a drawing as the doodle page sends it: a 420-CSS-px pad at 2 device px, a 280-px snapshot."""
    pen = PAGE_PEN * PAGE_CSS / 280 * PAGE_DPR  # the pad scales its pen with its CSS width
    ink = canvas_ink(drawing, PAGE_CSS * PAGE_DPR, pen)
    # drawImage onto the 280-px snapshot canvas: a smoothing downscale (area here, bilinear in browsers).
    return _png(cv2.resize(ink, (SNAPSHOT, SNAPSHOT), interpolation=cv2.INTER_AREA), transparent=True)


def _png(ink: np.ndarray, transparent: bool) -> bytes:
    """Encode ink (0..255) as black on white (gray PNG) or black on transparent (RGBA PNG)."""
    if transparent:
        image = np.zeros((*ink.shape, 4), np.uint8)
        image[..., 3] = ink
    else:
        image = 255 - ink
    ok, buf = cv2.imencode(".png", image)
    if not ok:  # pragma: no cover - PNG encoding of a uint8 array does not fail
        raise ValueError("cannot encode PNG")
    return buf.tobytes()
