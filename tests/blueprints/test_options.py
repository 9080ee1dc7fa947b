"""The one option parser: whole numbers, flags and choices, and their one error."""

from __future__ import annotations

import pytest

from blueprints.errors import ApiError
from blueprints.options import choice, flag, whole_number


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, 0), ("", 0), (3, 3), (3.0, 3), ("3", 3), (" 10 ", 10), ("+4", 4), ("٣", 3)],
)
def test_whole_number_reads_integers_in_any_form(value, expected):
    assert whole_number(value, "top", default=0, minimum=1, maximum=10) == expected


@pytest.mark.parametrize(
    "value", [0, 11, -1, "-2", "abc", 2.5, "3.5", True, False, [], {}, [2], "²", "1_0", "+-3", float("inf")]
)
def test_whole_number_refuses_the_rest_with_the_routes_code(value):
    with pytest.raises(ApiError) as caught:
        whole_number(value, "top", default=0, minimum=1, maximum=10, code="invalid_top")
    error = caught.value
    assert (error.status, error.code) == (400, "invalid_top")
    assert error.message.startswith("'top' must be a whole number from 1 to 10, got ")


def test_whole_number_without_a_maximum_says_so():
    assert whole_number(10**6, "top", default=3, minimum=1) == 10**6
    with pytest.raises(ApiError, match="from 1 up") as caught:
        whole_number("0", "page", default=1, minimum=1)
    assert caught.value.code == "invalid_parameter"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        (True, True),
        (False, False),
        (1, True),
        (0, False),
        *[(word, True) for word in ("1", "true", "yes", "on", " TRUE ", "Yes")],
        *[(word, False) for word in ("0", "false", "no", "off", "Off")],
    ],
)
def test_flag_vocabulary(value, expected):
    assert flag(value, "labelled", default=None) is expected


@pytest.mark.parametrize("value", ["maybe", 2, 3, 1.0, [], "y"])
def test_flag_refuses_the_rest(value):
    with pytest.raises(ApiError) as caught:
        flag(value, "detect", default=True, code="invalid_detect")
    assert (caught.value.status, caught.value.code) == (400, "invalid_detect")


def test_choice_ignores_case_and_names_the_choices():
    assert choice(" Probabilities ", "format", ("text", "probabilities"), default="text") == "probabilities"
    assert choice(None, "format", ("text", "probabilities"), default="text") == "text"
    with pytest.raises(ApiError, match="one of text, probabilities"):
        choice(3, "format", ("text", "probabilities"), default="text")


def test_a_huge_bad_value_is_cut_in_the_message():
    with pytest.raises(ApiError) as caught:
        whole_number("x" * 10_000, "top", default=0, minimum=1)
    assert len(caught.value.message) < 120 and caught.value.message.endswith("xxx....")
