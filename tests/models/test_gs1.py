"""GS1 element strings: AI table, check digits (valid and invalid), dates, amounts, the control key."""

from __future__ import annotations

from datetime import date

import pytest

from models import gs1

EXAMPLE = "(253)3610321456881 1234567890(17)010120(3902)001000 *11*"


def test_example_line_fields():
    fields = gs1.parse(EXAMPLE)
    assert fields["valid"] is True
    gdti = fields["253"]
    assert gdti["name"] == "GDTI"
    assert gdti["document_type"] == "3610321456881"
    assert gdti["serial"] == "1234567890"
    assert gdti["check_digit"] == {"valid": True, "found": "1", "expected": "1"}
    assert fields["17"]["name"] == "EXPIRY"
    assert fields["17"]["date"] == "2001-01-20"
    assert fields["3902"]["amount"] == "10.00"
    assert fields["3902"]["decimals"] == 2
    key = fields["control_key"]
    assert key["value"] == "11"
    assert "control key of the document line" in key["title"].lower()


def test_one_digit_control_key():
    fields = gs1.parse(EXAMPLE.replace("*11*", "*5*"))
    assert fields["control_key"]["value"] == "5"
    assert fields["valid"] is True


@pytest.mark.parametrize(
    "number, valid",
    [
        ("3610321456881", True),  # the GDTI of the example
        ("3610321456882", False),
        ("09501101530003", True),  # GS1's example GTIN
        ("09501101530004", False),
        ("106141411234567897", True),  # an SSCC
        ("106141411234567898", False),
        ("4012345000009", True),  # a GLN
    ],
)
def test_check_digit(number, valid):
    assert gs1.validate_check_digit(number)["valid"] is valid


def test_invalid_check_digit_is_reported_not_hidden():
    fields = gs1.parse(EXAMPLE.replace("3610321456881", "3610321456882"))
    assert fields["valid"] is False
    check = fields["253"]["check_digit"]
    assert check == {"valid": False, "found": "2", "expected": "1"}
    assert any("check digit" in e for e in fields["253"]["errors"])
    # The value is still given as read.
    assert fields["253"]["document_type"] == "3610321456882"


@pytest.mark.parametrize(
    "text, ai, check",
    [
        ("(00)106141411234567897", "00", True),
        ("(01)09501101530003", "01", True),
        ("(02)09501101530003", "02", True),
        ("(410)4012345000009", "410", True),
        ("(414)4012345000009", "414", True),
        ("(415)4012345000009", "415", True),
        ("(8020)1234567890", "8020", None),
        ("(10)AB12C", "10", None),
        ("(21)SERIAL42", "21", None),
        ("(400)PO-1234", "400", None),
    ],
)
def test_common_ais(text, ai, check):
    fields = gs1.parse(text)
    assert ai in fields
    assert fields[ai]["name"] != "UNKNOWN"
    if check:
        assert fields[ai]["check_digit"]["valid"] is True
    else:
        assert "check_digit" not in fields[ai]


def test_decimal_families():
    fields = gs1.parse("(3103)000525(3922)1999(3932)978250")
    assert fields["3103"]["measure"] == "0.525"
    assert fields["3922"]["amount"] == "19.99"
    assert fields["3932"]["currency"] == "978"
    assert fields["3932"]["amount"] == "2.50"
    assert "2 decimals" in gs1.lookup("3902").title


@pytest.mark.parametrize(
    "value, iso",
    [
        ("010120", "2001-01-20"),
        ("251231", "2025-12-31"),
        ("240200", "2024-02-29"),
        ("991301", None),
        ("250230", None),
    ],
)
def test_dates(value, iso):
    assert gs1.gs1_date(value, today=date(2025, 6, 1)) == iso


def test_century_window():
    assert gs1.gs1_date("990101", today=date(2025, 6, 1)) == "1999-01-01"
    assert gs1.gs1_date("700101", today=date(2025, 6, 1)) == "2070-01-01"


def test_wrong_length_and_unknown_ai_are_errors():
    fields = gs1.parse("(01)0950110153000(23)X")
    assert fields["valid"] is False
    assert any("14 characters" in e for e in fields["01"]["errors"])
    assert fields["23"]["name"] == "UNKNOWN"


@pytest.mark.parametrize("text", ["", "0123456789", "P<FRADUPONT<<MARIE", "12/05-2023 (7)"])
def test_not_an_element_string(text):
    assert gs1.parse(text) == {}
