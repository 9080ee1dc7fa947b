"""Turn one line's glyph probabilities into characters, using what the line's syntax allows.

A glyph the classifier calls "other print" (the reject class) is dropped. (Keeping such glyphs
when they sat between two glyphs at the line's pitch, as glyphs with a stub of the print above,
lost more lines than it saved on a development set from the training renderer: 45 vs 46 of 50.)
In a GS1 element string, application identifiers, numeric fields (dates, amounts, counts, keys'
check-digit parts; models.gs1.TABLE) and the control key between asterisks hold digits only:
there a glyph read as a letter (`O` for `0`, `I` for `1`) takes its best digit. Digits are never
changed, so a wrong check digit is still read as printed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from models import gs1

DIGITS = "0123456789"
NUMERIC_KINDS = ("date", "number", "decimal", "amount", "amount_iso")


def digit_positions(best_digit: Sequence[str], chars: Sequence[str]) -> set[int]:
    """Positions GS1 syntax reserves for digits, in a line's characters (spaces left out)."""
    out: set[int] = set()
    n = len(chars)
    if not n or chars[0] != "(":
        return out
    i = 0
    while i < n and chars[i] == "(":
        close = next((j for j in range(i + 1, min(n, i + 6)) if chars[j] == ")"), -1)
        if close == -1 or not 2 <= close - i - 1 <= 4:
            break
        code_at = range(i + 1, close)
        out.update(code_at)
        code = "".join(best_digit[k] for k in code_at)
        end = close + 1
        while end < n and chars[end] not in "(*":
            end += 1
        ai = gs1.lookup(code)
        if ai is not None:
            if ai.numeric or ai.kind in NUMERIC_KINDS:
                out.update(range(close + 1, end))
            elif ai.check_length:
                out.update(range(close + 1, min(end, close + 1 + ai.check_length)))
        i = end
    if i < n and chars[i] == "*":
        close = next((j for j in range(i + 1, min(n, i + 4)) if chars[j] == "*"), -1)
        if close > i + 1:
            out.update(range(i + 1, close))
    return out


def decode_line(probs: np.ndarray, charset: str, reject: bool) -> list[tuple[int, str, float]]:
    """Return (glyph index, character, confidence) for the glyphs kept in one line."""
    picks = probs.argmax(axis=1)
    kept = [k for k in range(len(picks)) if not reject or picks[k] != len(charset)]
    scores = probs[kept, : len(charset)]
    best = scores.argmax(axis=1)
    chars = [charset[b] for b in best]
    digit_index = np.array([charset.index(d) for d in DIGITS])
    best_digit = [DIGITS[int(i)] for i in scores[:, digit_index].argmax(axis=1)]
    for k in digit_positions(best_digit, chars):
        chars[k] = best_digit[k]
    return [(g, c, float(probs[g, charset.index(c)])) for g, c in zip(kept, chars, strict=True)]
