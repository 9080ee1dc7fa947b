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
# How likely, against the first choice, the runner-up of a digit/letter look-alike must be for the
# glyph's neighbours to settle it. Chosen on training.ocr_eval's development sets (800 lines): exact
# lines 749 without the rule, 762 / 763 / 765 / 764 at 0.05 / 0.1 / 0.2 / 0.3.
LOOKALIKE = 0.2


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


def _kind(char: str) -> str:
    return "digit" if char in DIGITS else "letter" if char.isalpha() else ""


def _neighbour_kind(chars: list[str], k: int, step: int, unsure: set[int], starts: set[int]) -> str:
    """Kind of the nearest glyph past k (step -1 or 1) that is sure, in k's group; "" when none."""
    j = k
    while 0 <= j + step < len(chars):
        if (j + 1 if step > 0 else j) in starts:  # a space between j and the next glyph
            return ""
        j += step
        if j not in unsure or not _kind(chars[j]):
            return _kind(chars[j])
    return ""


def _by_neighbours(
    scores: np.ndarray, charset: str, chars: list[str], fixed: set[int], starts: set[int]
) -> None:
    """Settle a digit/letter look-alike (`0`/`O`, `1`/`I`, `5`/`S`...) by the glyphs around it, in place.

    The classifier leans to digits (most training glyphs are), and in fonts where `0` and `O` look
    alike its second choice is as good as its first. Printed codes keep letters with letters and
    digits with digits (MRZ fields, lot codes, a document's serial): a glyph whose runner-up is of
    the other kind, at least LOOKALIKE as likely, takes it when its nearest sure neighbours in the
    same group (up to a separator or space) are all of that kind.
    """
    n = len(chars)
    order = np.argsort(-scores, axis=1)
    top, second = order[:, 0], order[:, 1]
    rows = np.arange(n)
    ratio = scores[rows, second] / np.maximum(scores[rows, top], 1e-9)
    unsure = {
        k
        for k in range(n)
        if k not in fixed
        and ratio[k] >= LOOKALIKE
        and {_kind(charset[top[k]]), _kind(charset[second[k]])} == {"digit", "letter"}
    }
    for k in sorted(unsure):
        kinds = set()
        for step in (-1, 1):
            kind = _neighbour_kind(chars, k, step, unsure, starts)
            if kind:
                kinds.add(kind)
        if len(kinds) == 1 and kinds != {_kind(chars[k])}:
            chars[k] = charset[second[k]]


def decode_line(
    probs: np.ndarray, charset: str, reject: bool, spaces: Sequence[int] | None = None
) -> list[tuple[int, str, float]]:
    """Return (glyph index, character, confidence) for the glyphs kept in one line.

    `spaces` (spaces before each glyph) splits the line into the groups look-alikes are settled in.
    """
    picks = probs.argmax(axis=1)
    kept = [k for k in range(len(picks)) if not reject or picks[k] != len(charset)]
    scores = probs[kept, : len(charset)]
    best = scores.argmax(axis=1)
    chars = [charset[b] for b in best]
    digit_index = np.array([charset.index(d) for d in DIGITS])
    best_digit = [DIGITS[int(i)] for i in scores[:, digit_index].argmax(axis=1)]
    forced = digit_positions(best_digit, chars)
    for k in forced:
        chars[k] = best_digit[k]
    gaps = np.cumsum([0, *(spaces or [0] * len(picks))])
    starts = {i for i in range(1, len(kept)) if gaps[kept[i] + 1] > gaps[kept[i - 1] + 1]}
    _by_neighbours(scores, charset, chars, forced, starts)
    return [(g, c, float(probs[g, charset.index(c)])) for g, c in zip(kept, chars, strict=True)]
