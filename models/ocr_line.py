"""One text line: cut its ink to its cap band (models.ocr_band), and cut one window per glyph.

Only ink inside the band (with room for brackets that rise or fall a little past it) is relabelled
into glyphs: other print touching the line from above or below is cut off where it leaves the band,
and pieces that lie wholly above the cap top or below the baseline are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from models.ocr_band import Band, TooMuchText, fit_rows

__all__ = ["Band", "Glyph", "band_pieces", "cap_height", "fit_rows", "line_glyphs"]

# Side of the square glyph image the classifier sees.
GLYPH_SIZE = 32
# Side of the window cut around each glyph, in cap heights: keeps size and vertical position
# (a hyphen sits mid-line, an asterisk is raised), which a tight crop would lose.
WINDOW = 1.6
# The largest window cut at full resolution, in working pixels (where the cap is about 32 px, so
# a glyph's window about 51): a larger piece is not a glyph, and its window is cut from a shrunk crop.
MAX_WINDOW = 256
# How far past the cap top and the baseline a glyph may reach, in cap heights. OCR-B's brackets rise
# 0.11 and fall 0.05; other fonts' up to 0.23 and 0.32 (Q's tail, brackets): those tips are trimmed
# the same way in training and serving. Text touching the line from above keeps at most this stub.
RISE, FALL = 0.15, 0.3
# Ink kept past the cap top and baseline in a glyph's tight window, in cap heights.
TIGHT = 0.03
# Widest gap, in cap heights, between pieces of one line past its band's ends (two spaces of OCR-B
# are 2.2 caps from glyph to glyph).
REACH = 2.5
# Widest gap, in cap heights, between specks grouped into one piece (see _speck_groups). Chosen on
# training.ocr_eval's development sets: exact lines of 800 (--n 200) 765 without, 768 / 769 / 769 at
# 0.15 / 0.2 / 0.3; of 2400 (--n 600) 2269 without, 2277 / 2278 at 0.2 / 0.3.
SPECKS = 0.3
# The pitch is the median step among those under 1.45 times this percentile of the steps between
# glyph centres. The median (50) took a short line's one space for a glyph step (">8 Z": steps of one
# and two pitches gave 1.5 pitches). Chosen on training.ocr_eval's development sets: exact lines of
# 2400 (--n 600) 2306 at 50, 2310 at 25; of 800 (--n 200) 775 at both.
PITCH_PERCENTILE = 25
# Glyphs each side whose steps a glyph's advance is measured against (count_spaces). Chosen on
# training.ocr_eval's development sets: exact lines of 2400 (--n 600) 2312 / 2315 / 2317 / 2315 at
# 0 (the line's one pitch) / 4 / 8 / 12; of 800 (--n 200) 775 at 0 and 8.
LOCAL = 8
# Drop a part split from a wide piece (touching glyphs) that lies wholly within 0.2 cap of the cap top
# or baseline, as band_pieces drops such pieces: a stub of other print that touched a glyph, cut off
# by the split, was read as a glyph and filled a space ("692906 *3*" read "6929063*3*"). Chosen on
# training.ocr_eval's development sets: exact lines of 2400 (--n 600) 2322 -> 2324, of 800 (--n 200)
# 778 -> 779 (dev-context 195 -> 196), no set worse.
SPLIT_STUBS = True
# A piece is the line's only if it reaches this far (in cap heights) below the cap top and above the base.
INSIDE = 0.2


@dataclass
class Glyph:
    """One segmented glyph: its box in the working (scaled, deskewed) frame and its input image."""

    x0: int
    y0: int
    x1: int
    y1: int
    image: np.ndarray
    spaces_before: int = 0
    # Distance from the previous glyph's centre, in pitches (0 for a line's first glyph): spaces
    # across glyphs that are dropped later (other print in a gap) are counted from it.
    advance: float = 0.0
    # The same window with the ink past the cap top and baseline removed, for a glyph that has some:
    # read when the full window is called other print (a stub of touching print can make it so).
    tight: np.ndarray | None = None

    @property
    def cx(self) -> float:
        return (self.x0 + self.x1) / 2


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


def band_pieces(
    binary: np.ndarray, band: Band, cap: float, inverse: np.ndarray, size: tuple[int, int]
) -> tuple[list[_Piece], np.ndarray, tuple[int, int], float]:
    """Relabel the ink inside a line's band; return its pieces, labels, their offset, share cut by the edge.

    `inverse` maps the working frame to the input image of `size` (width, height): a piece whose box
    reaches the input's edge was cut by the crop.
    """
    rows, cols = binary.shape
    # Glyphs past the band's ends (its cap-high components) belong to the line while they follow
    # each other at most REACH apart: a key like " *4*" whose 4 other print touches is not cap-high.
    sx0 = int(max(0, band.x0 - (REACH + 4) * cap))
    sx1 = int(min(cols, band.x1 + (REACH + 4) * cap))
    t, b = band.at(np.arange(sx0, sx1))
    c = np.maximum(b - t, 4.0)
    lo, hi = t - RISE * c, b + FALL * c
    sy0 = int(max(0, np.floor((t - 0.9 * c).min()))) if sx1 > sx0 else 0
    sy1 = int(min(rows, np.ceil((b + 0.9 * c).max()))) if sx1 > sx0 else 0
    if sx1 <= sx0 or sy1 <= sy0:
        return [], np.zeros((1, 1), np.int32), (0, 0), 0.0
    ys = np.arange(sy0, sy1)[:, None]
    sub = binary[sy0:sy1, sx0:sx1] & ((ys >= lo[None, :]) & (ys < hi[None, :])).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(sub, connectivity=8)
    if count <= 1:
        return [], labels, (sx0, sy0), 0.0
    x, y, w, h, area = (stats[1:, i] for i in range(5))
    ids = [[i] for i in range(1, count)]
    centre = np.clip(x + w // 2, 0, sx1 - sx0 - 1)
    speck = (area < 0.02 * c[centre] ** 2) | (np.maximum(w, h) < 0.2 * c[centre])
    if SPECKS and speck.sum() >= 2:
        for members, box in _speck_groups(labels, stats, np.flatnonzero(speck) + 1, SPECKS * cap):
            ids.append(members)
            x, y, w, h, area = (np.append(a, v) for a, v in zip((x, y, w, h, area), box, strict=True))
        centre = np.clip(x + w // 2, 0, sx1 - sx0 - 1)
    pt, pc = t[centre] - sy0, c[centre]
    pb = pt + pc
    keep = (area >= 0.02 * pc**2) & (np.maximum(w, h) >= 0.2 * pc) & (h <= 2 * pc)  # specks, blobs
    keep &= ~((w > 4 * pc) & (h < 0.4 * pc))  # rules
    keep &= (y + h > pt + INSIDE * pc) & (y < pb - INSIDE * pc)  # not wholly above the top or below the base
    keep &= _chained(x + sx0, x + w + sx0, keep, band, cap)
    idx = np.flatnonzero(keep)
    # Boxes back in input pixels: the ones that reach its edge were cut by the crop.
    corners = np.stack([x + sx0, y + sy0, x + w + sx0, y + h + sy0], axis=1)[idx].astype(float)
    xs = corners[:, [0, 2, 0, 2]] * inverse[0, 0] + corners[:, [1, 1, 3, 3]] * inverse[0, 1] + inverse[0, 2]
    ys_in = (
        corners[:, [0, 2, 0, 2]] * inverse[1, 0] + corners[:, [1, 1, 3, 3]] * inverse[1, 1] + inverse[1, 2]
    )
    width, height = size
    margin = 1.5
    cut = (xs.min(axis=1) < margin) | (xs.max(axis=1) > width - margin)
    cut |= (ys_in.min(axis=1) < margin) | (ys_in.max(axis=1) > height - margin)
    pieces = [_Piece(ids[i], int(x[i]), int(y[i]), int(x[i] + w[i]), int(y[i] + h[i])) for i in idx]
    return pieces, labels, (sx0, sy0), float(cut.mean()) if idx.size else 0.0


def _speck_groups(
    labels: np.ndarray, stats: np.ndarray, specks: np.ndarray, gap: float
) -> list[tuple[list[int], tuple[int, int, int, int, int]]]:
    """Groups of two or more specks at most `gap` apart, each with its box (x, y, w, h) and ink area.

    A thin-stroked glyph (Go Mono's asterisk, a faint bold one) binarizes into dots that are each
    too small for a glyph, and was lost: grouped, they are kept as one piece when big enough.
    """
    mask = np.isin(labels, specks)
    r = max(1, int(round(gap / 2)))
    grown = cv2.dilate(
        mask.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    )
    n, grouped = cv2.connectedComponents(grown, connectivity=8)
    pairs = np.unique(grouped[mask].astype(np.int64) * labels.max() + labels[mask] - 1)
    group, member = pairs // labels.max(), pairs % labels.max() + 1
    out = []
    for g in np.unique(group):
        members = member[group == g]
        if members.size < 2:
            continue
        s = stats[members]
        x0, y0 = s[:, 0].min(), s[:, 1].min()
        x1, y1 = (s[:, 0] + s[:, 2]).max(), (s[:, 1] + s[:, 3]).max()
        out.append(
            ([int(m) for m in members], (int(x0), int(y0), int(x1 - x0), int(y1 - y0), int(s[:, 4].sum())))
        )
    return out


def _chained(x0: np.ndarray, x1: np.ndarray, keep: np.ndarray, band: Band, cap: float) -> np.ndarray:
    """Pieces inside the band's ends, or reaching it through pieces at most REACH caps apart."""
    out = keep & (x1 > band.x0 - 0.5 * cap) & (x0 < band.x1 + 0.5 * cap)
    if not out.any():
        return out
    order = np.flatnonzero(keep)
    for side in (1, -1):
        edge = x1[out].max() if side > 0 else x0[out].min()
        ranked = order[np.argsort(x0[order] if side > 0 else -x1[order])]
        for i in ranked:
            if out[i]:
                continue
            if (x0[i] - edge if side > 0 else edge - x1[i]) > REACH * cap:
                if (x0[i] > edge) == (side > 0):
                    break
                continue
            out[i] = True
            edge = max(edge, x1[i]) if side > 0 else min(edge, x0[i])
    return out


def line_glyphs(
    pieces: list[_Piece], labels: np.ndarray, band: Band, offset: tuple[int, int], limit: int | None = None
) -> list[Glyph]:
    """Merge broken pieces, split touching glyphs, and cut one window per glyph.

    Raise TooMuchText, before any window is cut, when the line has more than `limit` glyphs.
    """
    if not pieces:
        return []
    pieces.sort(key=lambda p: p.x0)
    ox, oy = offset
    heights = np.array([p.h for p in pieces], float)
    cap = cap_height(heights)
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
            final.extend(
                q for q in _split(p, labels, pitch, char_w) if not SPLIT_STUBS or _in_band(q, band, ox, oy)
            )
        else:
            final.append(p)
    if limit is not None and len(final) > limit:
        raise TooMuchText(f"{len(final)} glyphs in a line, over the {limit} left")
    glyphs = []
    previous = None
    for p in final:
        t, b = band.at(ox + p.cx)
        local_cap = max(4.0, float(b - t))
        mid = float(t + b) / 2 - oy
        image = _glyph_image(p, labels, mid, local_cap)
        if image is None:
            continue
        g = Glyph(p.x0 + ox, p.y0 + oy, p.x1 + ox, p.y1 + oy, image)
        rows = (float(t) - oy - TIGHT * local_cap, float(b) - oy + TIGHT * local_cap)
        if p.y0 < rows[0] or p.y1 > rows[1]:
            g.tight = _glyph_image(p, labels, mid, local_cap, rows)
        if previous is not None:
            # The pitch scales with the local cap height (perspective makes one end smaller).
            g.advance = (g.cx - previous.cx) * cap / local_cap / pitch
        glyphs.append(g)
        previous = g
    count_spaces(glyphs)
    return glyphs


def _in_band(p: _Piece, band: Band, ox: int, oy: int) -> bool:
    """Whether a piece reaches into the band's middle, as band_pieces asks of every piece it keeps."""
    t, b = band.at(ox + p.cx)
    c = max(4.0, float(b - t))
    return p.y1 + oy > t + INSIDE * c and p.y0 + oy < b - INSIDE * c


def count_spaces(glyphs: list[Glyph]) -> None:
    """Set each glyph's spaces before it from its advance, against the glyph steps around it, in place.

    Where the band does not follow the print's growth (keystone past the band's cap-high ends, a
    bend), glyph steps drift to 1.3 pitches and more along the line and a single space read as two:
    each advance is taken against the median of the glyph steps (under 1.45) within LOCAL glyphs.
    """
    advance = np.array([g.advance for g in glyphs], float)
    local = np.ones(len(glyphs))
    window = int(LOCAL)
    if window and len(glyphs) > 2:
        # Each glyph's neighbours' steps in one array (NaN: itself, the first glyph, past the ends).
        steps = np.where(advance < 1.45, advance, np.nan)
        steps[0] = np.nan
        padded = np.pad(steps, window, constant_values=np.nan)
        near = np.lib.stride_tricks.sliding_window_view(padded, 2 * window + 1).copy()
        near[:, window] = np.nan
        enough = (~np.isnan(near)).sum(axis=1) >= 2
        if enough.any():
            local[enough] = np.nanmedian(near[enough], axis=1)
    for j in range(1, len(glyphs)):
        step = float(advance[j] / local[j])
        glyphs[j].advance = step
        if step > 1.5:
            glyphs[j].spaces_before = max(1, int(round(step)) - 1)


def cap_height(heights: np.ndarray) -> float:
    """Estimate the cap height from component heights, ignoring specks and the odd big blob."""
    if heights.size == 0:
        return 0.0
    top = np.percentile(heights, 90)
    return float(np.median(heights[heights >= 0.5 * top]))


def _pitch(tall: list[_Piece], cap: float, char_w: float) -> float:
    """Estimate the distance between neighbouring glyph centres (the font's advance)."""
    steps = np.diff([p.cx for p in tall])
    steps = steps[steps > 0.3 * cap]
    if steps.size >= 2:
        typical = float(np.percentile(steps, PITCH_PERCENTILE))
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


def _glyph_image(
    p: _Piece, labels: np.ndarray, mid: float, cap: float, rows: tuple[float, float] | None = None
) -> np.ndarray | None:
    """Cut a square window around a glyph (its own pixels only, within `rows` if given), resized to GLYPH_SIZE."""
    side = int(round(max(WINDOW * cap, 1.1 * p.w, 1.1 * p.h)))
    cx = int(round(p.cx))
    cy = int(round(mid)) if abs(p.y0 + p.h / 2 - mid) < 0.6 * side - p.h / 2 else int(round(p.y0 + p.h / 2))
    wx0, wy0 = cx - side // 2, cy - side // 2
    # The piece's own pixels lie inside its box: only the window's part of that box is read (a
    # piece as wide as the image, such as a row of dots grouped as specks, made a window of the
    # whole image, 77 MB and 20 ms for each of its glyphs).
    sx0, sy0 = max(wx0, 0, p.x0), max(wy0, 0, p.y0)
    sx1, sy1 = min(wx0 + side, labels.shape[1], p.x1), min(wy0 + side, labels.shape[0], p.y1)
    if sx1 <= sx0 or sy1 <= sy0:
        return None
    crop = np.isin(labels[sy0:sy1, sx0:sx1], p.ids)
    if p.cut is not None:
        a, b = p.cut
        cols = np.arange(sx0, sx1)
        crop &= ((cols >= a) & (cols < b))[None, :]
    if rows is not None:
        ys = np.arange(sy0, sy1)
        crop &= ((ys >= rows[0]) & (ys < rows[1]))[:, None]
    if not crop.any():
        return None
    crop = crop.astype(np.float32)
    x, y = sx0 - wx0, sy0 - wy0
    if side > MAX_WINDOW:
        # No glyph of the charset is this large (a window is about WINDOW x TARGET_CAP = 51 working
        # pixels): shrink the crop first, so that the window's cost stays bounded whatever the piece.
        f = MAX_WINDOW / side
        h, w = crop.shape
        crop = cv2.resize(crop, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
        side, x, y = MAX_WINDOW, min(int(x * f), MAX_WINDOW - 1), min(int(y * f), MAX_WINDOW - 1)
        crop = crop[: side - y, : side - x]
    canvas = np.zeros((side, side), np.float32)
    canvas[y : y + crop.shape[0], x : x + crop.shape[1]] = crop
    return cv2.resize(canvas, (GLYPH_SIZE, GLYPH_SIZE), interpolation=cv2.INTER_AREA)
