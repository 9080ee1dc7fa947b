"""Glyphs the classifier calls other print, read again: from their tight window, or on the line's pitch.

Print touching a glyph from above or below leaves a stub of it inside the band's allowance for
brackets, and the classifier may then call the whole glyph other print (the reject class): the
line loses a glyph. Two second chances, both only for lines that are kept.
"""

from __future__ import annotations

import re

import numpy as np

from models import gs1
from models.ocr_line import Glyph

# A glyph called other print is kept as its best character when that character is at least this
# likely and the glyph sits on the line's pitch (no closer than STEP pitches to a neighbour).
# Chosen on training.ocr_eval's development sets: exact lines of 2400 (--n 600) 2278 without, then
# 2288 / 2295 / 2298 / 2304 / 2303 at 0.3 / 0.2 / 0.1 / 0.05 / 0.02; of 800 (--n 200) 769 without,
# 772 / 774 / 775 at 0.2 / 0.1 / 0.05. Checking candidates, likeliest first, against the glyphs kept
# so far rather than against every neighbour: 2310 -> 2312 of 2400, 775 of 800 either way.
LEAST = 0.05
STEP = 0.7

KEY_END = re.compile(r"\*\d+\*$")
# A glyph kept by the on-pitch rescue where a GS1 line's key asterisk belongs (after the key's opening
# asterisk and digits at the line's end, or before the digits and asterisk that end it) is read as one:
# a mid-height asterisk the classifier calls other print, likelier "-" than "*", was read "-" or, in a
# numeric field, a digit. Chosen on training.ocr_eval's development sets: exact lines of 2400 (--n 600)
# 2324 -> 2325, of 800 (--n 200) 779 either way, no set worse.
KEY_STAR = True
KEY_OPEN = re.compile(r"\*\d{1,3}$")
KEY_REST = re.compile(r"^\d{1,3}\*$")


def key_asterisk(chars: list[str], j: int) -> bool:
    """Whether glyph j stands where a GS1 line's control-key asterisk belongs (spaces left out of `chars`)."""
    before, after = "".join(chars[:j]), "".join(chars[j + 1 :])
    if not gs1.ELEMENT.search(before):
        return False
    if not after:
        return bool(KEY_OPEN.search(before))
    return bool(KEY_REST.match(after)) and "*" not in before and before[-1:].isdigit()


def breaks_syntax(chars: list[str], j: int) -> bool:
    """Whether glyph j's character breaks a GS1 line's syntax (spaces left out of `chars`).

    Only for a line with an AI in parentheses: a bracket that is not part of an AI, a glyph
    after the key's closing asterisk, or a glyph before the line's first bracket. Development sets
    (training.ocr_eval --n 600): exact lines 2317 -> 2319 of 2400, none lost; --n 200 unchanged.
    """
    rest = "".join(chars[:j] + chars[j + 1 :])
    if not gs1.ELEMENT.search(rest):
        return False
    text = "".join(chars)
    if chars[j] in "()":
        return not any(m.start() <= j < m.end() for m in gs1.ELEMENT.finditer(text))
    if j == len(chars) - 1 and KEY_END.search(text[:j]):
        return True
    return j == 0 and rest.startswith("(")


def tight_rows(glyphs: list[Glyph], n_rows: int) -> dict[int, int]:
    """Map each glyph that has a tight window to its row in the batch (after every full window)."""
    rows = iter(range(len(glyphs), n_rows))
    return {k: next(rows) for k, g in enumerate(glyphs) if g.tight is not None}


def second_chance(probs: np.ndarray, glyphs: list[Glyph], reject: int) -> np.ndarray:
    """One row per glyph: a glyph called other print takes its tight window's reading, if that is a character.

    The same window without ink past the cap top and baseline often reads a glyph that a stub of
    touching print made the classifier reject (training.ocr_eval's development sets, 200 lines
    each: 2 more lines exact with context print, none lost elsewhere).
    """
    main = probs[: len(glyphs)].copy()
    for k, row in tight_rows(glyphs, len(probs)).items():
        if main[k].argmax() == reject and probs[row].argmax() != reject:
            main[k] = probs[row]
    return main


def on_pitch(
    main: np.ndarray,
    probs: np.ndarray,
    lines: list[list[Glyph]],
    reject: int,
    least: float | None = None,
    charset: str | None = None,
) -> np.ndarray:
    """Keep a glyph still called other print as its best character when it is likely and on the pitch.

    Other print inside a kept line's band (a descender, a stub of a word) lies anywhere along it,
    often between or over glyphs; a glyph of the line lies a pitch from its neighbours, or past a
    space. Candidates are taken most likely first, each at least STEP pitches from every glyph kept
    so far (so of two pieces of one glyph, only the likelier is kept). The character's own
    probability stays its confidence.
    """
    least = LEAST if least is None else least
    out = main.copy()
    tight = tight_rows([g for line in lines for g in line], len(probs))
    first = 0
    for line in lines:
        cx = np.array([g.cx for g in line])
        joined = np.array([g.spaces_before == 0 for g in line])
        steps = np.diff(cx)[joined[1:]]
        if steps.size >= 2:
            pitch = float(np.median(steps))
            kept = out[first : first + len(line)].argmax(axis=1) != reject
            candidates = []
            for j in np.flatnonzero(~kept):
                k = first + j
                rows = [main[k]] + ([probs[tight[k]]] if k in tight else [])
                row = max(rows, key=lambda r: float(r[:reject].max()))
                if row[:reject].max() >= least:
                    candidates.append((float(row[:reject].max()), j, row))
            for _, j, row in sorted(candidates, key=lambda c: -c[0]):
                if (kept & (np.abs(cx - cx[j]) < STEP * pitch)).any():
                    continue
                if charset is not None:
                    order = [i for i in np.argsort(cx, kind="stable") if kept[i] or i == j]
                    best = out[first : first + len(line)].argmax(axis=1)
                    chars = [
                        charset[int(row[:reject].argmax())] if i == j else charset[best[i]] for i in order
                    ]
                    if KEY_STAR and key_asterisk(chars, order.index(j)):
                        star = charset.index("*")
                        row = np.zeros_like(row)
                        row[star] = max(float(main[first + j, star]), 1e-6)
                    elif breaks_syntax(chars, order.index(j)):
                        continue
                out[first + j] = row
                out[first + j, reject] = 0.0
                kept[j] = True
        first += len(line)
    return out
