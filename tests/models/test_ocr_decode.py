"""GS1-aware decoding (models.ocr_decode): digits where the syntax needs them, letters elsewhere."""

from __future__ import annotations

import numpy as np

from models.ocr import DEFAULT_CHARSET
from models.ocr_decode import decode_line, digit_positions

LOOKALIKE = {"O": "0", "I": "1", "S": "5", "B": "8"}


def probs_for(text: str, reject: set[int] = frozenset()) -> np.ndarray:
    """One-hot-ish rows: the read character first, its look-alike digit second."""
    rows = np.full((len(text), len(DEFAULT_CHARSET) + 1), 1e-4, np.float32)
    for k, c in enumerate(text):
        rows[k, len(DEFAULT_CHARSET) if k in reject else DEFAULT_CHARSET.index(c)] = 0.9
        if c in LOOKALIKE:
            rows[k, DEFAULT_CHARSET.index(LOOKALIKE[c])] = 0.08
    return rows


def read(text: str, reject: set[int] = frozenset()) -> str:
    return "".join(c for _, c, _ in decode_line(probs_for(text, reject), DEFAULT_CHARSET, True))


def test_digits_in_ais_numeric_fields_and_the_key():
    assert read("(O1)O950110153000S(17)2S1231(10)ABO1(3902)OOI000*I*") == (
        "(01)09501101530005(17)251231(10)ABO1(3902)001000*1*"
    )


def test_check_digit_part_only_of_a_gdti_and_digits_never_change():
    # AI 253: 13 digits with a check digit, then an alphanumeric serial; a wrong check digit stays.
    assert read("(253)36103214S6882ABO") == "(253)3610321456882ABO"


def test_lines_that_are_not_gs1_are_left_alone():
    for text in ("P<FRADUPONT<<MARIE", "12/05-2023<+42>(7)*8*", "IO0SB"):
        assert read(text) == text
    assert digit_positions(list("1O"), list("(O")) == set()


def test_rejected_glyphs_are_dropped():
    assert read("(01)X123", reject={4}) == "(01)123"
