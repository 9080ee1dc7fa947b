"""A text line's cap band: cap top and baseline as low-order polynomials of x, fitted to its glyphs.

The band is fitted to the components of cap height that lie on one row, so a line stays one line
when it is tilted, curved or seen in perspective (models.ocr_line cuts the line's glyphs inside it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Past its ends (glyphs there are not cap-high, or a keystone or bend drops them from the fit), a band
# goes on along its midline's tangent, its height held; it was held flat, and cut off or mis-centred
# the last glyphs of a tilted or bent line ("...W<O" for "...WKOU"). The midline only: apart,
# a short band's top and base slopes diverge. Chosen on training.ocr_eval's development sets: exact
# lines of 2400 (--n 600) 2321 -> 2322 (2321 with each line's own tangent), of 800 (--n 200) 777 ->
# 778 (dev-fonts 186 -> 187), no set worse.
EXTEND = True


@dataclass
class Band:
    """A line's cap top and baseline as polynomials of x, over the columns its glyphs span."""

    top: np.ndarray
    base: np.ndarray
    x0: float
    x1: float

    def at(self, x: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Return the cap top and baseline rows at column(s) x (along the end's tangent past the ends)."""
        inside = np.clip(x, self.x0, self.x1)
        top, base = np.polyval(self.top, inside), np.polyval(self.base, inside)
        past = np.asarray(x, float) - inside
        if not EXTEND or not past.any():
            return top, base
        # The midline's tangent: a short band's top and base slopes are noisy apart (they diverge).
        slope = (np.polyval(np.polyder(self.top), inside) + np.polyval(np.polyder(self.base), inside)) / 2
        shift = slope * past
        return top + shift, base + shift


def _fit(cx: np.ndarray, y: np.ndarray, degree: int) -> np.ndarray:
    return np.polyfit(cx, y, degree) if degree else np.array([float(np.median(y))])


def _band(cx: np.ndarray, top: np.ndarray, bottom: np.ndarray, members: np.ndarray, cap: float) -> Band:
    span = cx[members].max() - cx[members].min()
    degree = 0 if members.size < 4 else 1 if members.size < 10 or span < 12 * cap else 2
    return Band(
        _fit(cx[members], top[members], degree),
        _fit(cx[members], bottom[members], degree),
        float(cx[members].min()),
        float(cx[members].max()),
    )


def _fits(band: Band, cx: np.ndarray, top: np.ndarray, bottom: np.ndarray, cap: float) -> np.ndarray:
    t, b = band.at(cx)
    return np.abs(top - t) + np.abs(bottom - b) < 0.45 * cap


class TooMuchText(Exception):
    """More text than the caller's budget: rows in a group (fit_rows), glyphs in a line (line_glyphs),
    components in an image; segment() answers it as 422 too_much_text."""


def _near_counts(mids: np.ndarray, radius: float) -> np.ndarray:
    """For each value, how many values (itself included) lie less than `radius` from it.

    By sorting and binary search, in O(n log n) time and O(n) memory: the pairwise matrix this
    replaces took n^2 (75 GiB for the 100,000 specks of a 4000x4000 image of 1% random dots).
    """
    ordered = np.sort(mids)
    return np.searchsorted(ordered, mids + radius, side="left") - np.searchsorted(
        ordered, mids - radius, side="right"
    )


def fit_rows(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, h: np.ndarray, cap: float, max_rows: int | None = None
) -> list[Band]:
    """Find the rows of cap-high components in a group (its densest row first) and fit each a band.

    Raise TooMuchText past `max_rows` rows: each row costs a pass over the group's components, and
    joining rows a pass over pairs of them.
    """
    typical = np.flatnonzero((h >= 0.7 * cap) & (h <= 1.35 * cap))
    cx, top, bottom = x + w / 2, y.astype(float), (y + h).astype(float)
    rows: list[tuple[Band, np.ndarray]] = []
    left = typical
    while left.size >= 3 or (left.size and not rows):
        if max_rows is not None and len(rows) >= max_rows:
            raise TooMuchText(f"over {max_rows} rows in one group")
        mids = (top[left] + bottom[left]) / 2
        # The densest row: the component with most others centred within a third of a cap of it.
        near = _near_counts(mids, 0.35 * cap)
        members = left[np.abs(mids - mids[int(near.argmax())]) < 0.35 * cap]
        band = _band(cx, top, bottom, members, cap)
        for _ in range(3):
            # Within three caps in x of the row's ends, or the next glyph along it.
            reach = (cx[left] > band.x0 - 3 * cap) & (cx[left] < band.x1 + 3 * cap)
            fits = _fits(band, cx[left], top[left], bottom[left], cap) & reach
            if not fits.any():
                break
            members = left[fits]
            band = _band(cx, top, bottom, members, cap)
        rows.append((band, members))
        left = np.setdiff1d(left, members)
    return [band for band, _ in _join_rows(rows, cx, top, bottom, cap)]


def _join_rows(
    rows: list[tuple[Band, np.ndarray]], cx: np.ndarray, top: np.ndarray, bottom: np.ndarray, cap: float
) -> list[tuple[Band, np.ndarray]]:
    """Join rows that are pieces of one line: side by side, a few caps apart, and one band fits both.

    Glyphs merged with other print that touches them are not cap-high, so a run of them breaks the
    chain of cap-high components a row grows along (three caps per step): the line came out as two
    rows, and the shorter was read as a line of its own (on the development set, 2 of 200 lines).
    """
    joined = True
    while joined and len(rows) > 1:
        joined = False
        for i in range(len(rows)):
            for j in range(i + 1, len(rows)):
                (a, ma), (b, mb) = rows[i], rows[j]
                gap = max(b.x0 - a.x1, a.x0 - b.x1)
                if not 0 < gap < 6 * cap or max(ma.size, mb.size) < 3:
                    continue
                both = np.union1d(ma, mb)
                band = _band(cx, top, bottom, both, cap)
                fits = [_fits(band, cx[m], top[m], bottom[m], cap).mean() for m in (ma, mb)]
                if min(fits) >= 0.9:
                    rows[i] = (band, both)
                    del rows[j]
                    joined = True
                    break
            if joined:
                break
    return rows
