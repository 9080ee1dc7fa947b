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
    for text in ("P<FRADUPONT<<MARIE", "12/05-2023<+42>(7)*8*"):
        assert read(text) == text
    assert digit_positions(list("1O"), list("(O")) == set()


def test_rejected_glyphs_are_dropped():
    assert read("(01)X123", reject={4}) == "(01)123"


def lookalike_probs(text: str, second: dict[int, tuple[str, float]]) -> np.ndarray:
    """Rows read as `text`, with a runner-up of the given probability at some positions."""
    rows = np.full((len(text), len(DEFAULT_CHARSET) + 1), 1e-4, np.float32)
    for k, c in enumerate(text):
        rows[k, DEFAULT_CHARSET.index(c)] = 0.6
        if k in second:
            alt, p = second[k]
            rows[k, DEFAULT_CHARSET.index(alt)] = p
    return rows


def decode(text: str, second: dict[int, tuple[str, float]], spaces: list[int] | None = None) -> str:
    rows = lookalike_probs(text, second)
    return "".join(c for _, c, _ in decode_line(rows, DEFAULT_CHARSET, True, spaces))


def test_lookalikes_take_the_kind_of_their_group():
    # A lot code's O read as 0 (O close behind) between letters becomes O; an O among a serial's
    # digits (past the GDTI's checked part, which the syntax does not force) becomes 0.
    assert decode("(21)9TK0X", {7: ("O", 0.4)}) == "(21)9TKOX"
    assert decode("(253)3610321456881O23", {18: ("0", 0.3)}) == "(253)3610321456881023"
    assert decode("PRFVF00WJ", {5: ("O", 0.3), 6: ("O", 0.3)}) == "PRFVFOOWJ"
    assert decode("<<12I4<<", {4: ("1", 0.5)}) == "<<1214<<"


def test_lookalikes_stay_when_the_group_is_mixed_or_the_runner_up_is_weak():
    assert decode("W90X", {2: ("O", 0.4)}) == "W90X"  # a digit on one side, a letter on the other
    assert decode("ABC0D", {3: ("O", 0.001)}) == "ABC0D"  # the classifier is sure
    # A space ends the group: the letters after it say nothing about the digits before.
    assert decode("120AB", {2: ("O", 0.4)}, spaces=[0, 0, 0, 1, 0]) == "120AB"
    assert decode("120AB", {2: ("O", 0.4)}) == "120AB"  # mixed without the space too
    assert decode("12 0AB".replace(" ", ""), {2: ("O", 0.4)}, spaces=[0, 0, 1, 0, 0]) == "12OAB"
