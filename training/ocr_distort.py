"""Training-only distortions: other print around the line, curved paper, perspective.

Added (2026-11) so the classifier sees what the cut of a document band and a phone photo give:
pieces of the text above or below that touch or nearly touch the line, rows that bend, one end of
the line smaller than the other, slanted verticals. The out-of-collection sets of
training/ocr_evalsets.py model the same effects with other code (serif words from a fixed list,
sine bends, homographies, shadows, disk and motion blur), so they measure more than this code.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from training.ocr_render import Style

_LETTERS = "abcdefghijklmnopqrstuvwxyzéèàçôABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,:;-/%€'"


def context_text(rng: np.random.Generator) -> str:
    """Random words of mixed case, digits and punctuation: stands for any other printed matter."""
    words = []
    for _ in range(int(rng.integers(2, 10))):
        n = int(rng.integers(1, 10))
        word = "".join(rng.choice(list(_LETTERS[:31] if rng.random() < 0.7 else _LETTERS), n))
        words.append(word.capitalize() if rng.random() < 0.3 else word)
    return " ".join(words)


def augment(style: Style, rng: np.random.Generator, context_fonts: list[Path]) -> Style:
    """Add context print (45% of images) and photo geometry (35%) to a print/scan style."""
    extra: dict = {}
    if rng.random() < 0.45:
        # Down to -0.17 cap (2026-12, was -0.08): stubs of the other print that reach inside the cap band,
        # which the dev sets showed rejected as other print.
        above = (float(rng.uniform(-0.17, 0.4)), float(rng.uniform(0.15, 0.85)))
        below = (float(rng.uniform(-0.1, 0.4)), float(rng.uniform(0.15, 0.7)))
        where = rng.random()
        extra["context"] = (
            above if where < 0.6 else (np.nan, np.nan) + below if where < 0.8 else above + below
        )
        extra["context_font"] = str(context_fonts[int(rng.integers(len(context_fonts)))])
        extra["rules"] = "any"
    if rng.random() < 0.35:
        extra["curve"] = float(rng.uniform(-0.5, 0.5))
        extra["keystone"] = float(np.exp(rng.uniform(-0.25, 0.25)))
        extra["shear"] = float(rng.uniform(-0.12, 0.12))
    return replace(style, **extra)


def add_context(ink: np.ndarray, style: Style, cap: float, rng: np.random.Generator) -> np.ndarray:
    """Put cut-off print above and/or below the block, `gap` cap heights from its ink (< 0: touching).

    With `style.rules == "any"` (training), three times in ten a printed rule is drawn over or under the
    block too (see `_rule`); otherwise one time in seven a level rule over it, touching it or not.
    """
    rows = np.flatnonzero(ink.max(axis=1) > 0.5)
    if rows.size == 0:
        return ink
    parts = []
    for side, (gap, visible) in zip(("above", "below"), np.reshape(style.context, (-1, 2)), strict=False):
        if np.isnan(gap):
            continue
        size = max(6, int(round(cap / 0.72 * rng.uniform(0.6, 1.3))))
        font = ImageFont.truetype(style.context_font, size, layout_engine=ImageFont.Layout.BASIC)
        text = context_text(rng)
        left, top, right, bottom = font.getbbox(text)
        img = Image.new("L", (right - left + 4, bottom - top + 4), 0)
        ImageDraw.Draw(img).text((2 - left, 2 - top), text, font=font, fill=255)
        other = np.asarray(img, np.float32) / 255
        o_rows = np.flatnonzero(other.max(axis=1) > 0.5)
        if o_rows.size == 0:
            continue
        other = other[o_rows[0] : o_rows[-1] + 1]
        keep = max(1, int(round(other.shape[0] * visible)))
        other = other[-keep:] if side == "above" else other[:keep]
        x = int(rng.integers(-other.shape[1] // 2, ink.shape[1]))
        y = (
            int(round(rows[0] - gap * cap - keep))
            if side == "above"
            else int(round(rows[-1] + 1 + gap * cap))
        )
        parts.append((other, y, x))
    if style.rules == "any":
        if rng.random() < 0.3:
            parts.append(_rule(ink.shape[1], rows, cap, rng))
    elif rng.random() < 0.15:  # the rules before 2026-12, which the dev sets keep: level, over the block
        thick = max(2, int(cap * rng.uniform(0.03, 0.1)))
        length = int(ink.shape[1] * rng.uniform(0.3, 1.0))
        parts.append(
            (np.ones((thick, length), np.float32), int(rows[0] - cap * rng.uniform(0.0, 0.3)) - thick, 0)
        )
    if not parts:
        return ink
    top = min(0, *(y for _, y, _ in parts))
    bottom = max(ink.shape[0], *(y + o.shape[0] for o, y, _ in parts))
    canvas = np.zeros((bottom - top, ink.shape[1]), np.float32)
    canvas[-top : -top + ink.shape[0]] = ink
    for other, y, x in parts:
        x0, x1 = max(0, x), min(canvas.shape[1], x + other.shape[1])
        if x1 > x0:
            region = canvas[y - top : y - top + other.shape[0], x0:x1]
            np.maximum(region, other[:, x0 - x : x1 - x], out=region)
    return canvas


def _rule(width: int, rows: np.ndarray, cap: float, rng: np.random.Generator) -> tuple[np.ndarray, int, int]:
    """A printed rule (image, top row, left column): over the block, touching it, crossing the glyph tops
    by up to 0.15 cap, or under it; level or slanted by up to 1.4 degrees (2026-12: the dev sets' rules
    across the glyph tops turned 1 into T).
    """
    thick = max(2, int(cap * rng.uniform(0.03, 0.1)))
    length = max(2, int(width * rng.uniform(0.3, 1.0)))
    slope = float(rng.uniform(-0.025, 0.025)) if rng.random() < 0.5 else 0.0
    drop = int(round(abs(slope) * length))
    image = np.zeros((thick + drop + 2, length), np.float32)
    y0, y1 = (1, 1 + drop) if slope >= 0 else (1 + drop, 1)
    cv2.line(image, (0, y0 + thick // 2), (length - 1, y1 + thick // 2), 1.0, thick)
    if rng.random() < 0.75:
        top = int(rows[0] - cap * rng.uniform(-0.15, 0.3)) - thick - drop // 2
    else:
        top = int(rows[-1] + 1 + cap * rng.uniform(-0.1, 0.3)) - drop // 2
    return image, top, int(rng.integers(0, max(1, width - length + 1)))


def warp(ink: np.ndarray, style: Style, cap: float) -> np.ndarray:
    """Bend rows along a cubic (curved paper), then a keystone and a slant (the camera's perspective)."""
    pad = int(cap * (abs(style.curve) + 0.3 + abs(style.shear)))
    ink = cv2.copyMakeBorder(ink, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    h, w = ink.shape
    if style.curve:
        u = np.linspace(-1, 1, w, dtype=np.float32)
        bend = style.curve * cap * (0.7 * u**2 + 0.3 * u**3 - 0.35)
        map_x = np.tile(np.arange(w, dtype=np.float32), (h, 1))
        map_y = (np.arange(h, dtype=np.float32)[:, None] + bend[None, :]).astype(np.float32)
        ink = cv2.remap(ink, map_x, map_y, cv2.INTER_LINEAR, borderValue=0)
    if style.keystone != 1.0 or style.shear:
        half = h * (style.keystone - 1) / 2
        s = style.shear * h / 2
        src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
        dst = np.float32([[s, 0], [w + s, -half], [w - s, h + half], [-s, h]])
        dst -= dst.min(axis=0)
        size = (int(dst[:, 0].max()) + 1, int(dst[:, 1].max()) + 1)
        ink = cv2.warpPerspective(ink, cv2.getPerspectiveTransform(src, dst), size, flags=cv2.INTER_LINEAR)
    return ink
