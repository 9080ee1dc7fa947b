"""Request options (`top`, `detect`, `format`, `labelled`, `page`, `since`, ...): one parser per kind.

A route states its option's name, default and bounds; a value that does not fit stops the request
with 400 in the one error shape. `code` names the option where the route has always had its own
code (invalid_top, invalid_detect, invalid_format), else it is invalid_parameter.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from blueprints.errors import api_error
from config import FALSE, TRUE  # one true/false vocabulary for settings and options

# \d is what int() reads (str.isdigit would let "²" through to an int() that fails); 18 digits hold
# any bound an option has, and int() refuses texts over 4,300 digits with an error, not a number.
# "60.0" too: JSON Schema counts 60.0 as an integer, and a client may write it so.
WHOLE = re.compile(r"[+-]?\d{1,18}(?:\.0*)?")
# A client's bad value is echoed in the error; a huge one is cut so the answer stays small.
SHOWN_CHARS = 40

Default = TypeVar("Default")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."


def _absent(value: Any) -> bool:
    return value is None or value == ""


def whole_number(
    value: Any,
    name: str,
    *,
    default: Default,
    minimum: int,
    maximum: int | None = None,
    code: str = "invalid_parameter",
) -> int | Default:
    """Read a whole number within bounds: an integer, an integral float, or its decimal text."""
    if _absent(value):
        return default
    number = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str):
        text = value.strip()
        if WHOLE.fullmatch(text):
            number = int(text.partition(".")[0])
    if number is None or number < minimum or (maximum is not None and number > maximum):
        bounds = f"from {minimum} to {maximum}" if maximum is not None else f"from {minimum} up"
        api_error(400, code, f"'{name}' must be a whole number {bounds}, got {_shown(value)}.")
    return number


def flag(value: Any, name: str, *, default: Default, code: str = "invalid_parameter") -> bool | Default:
    """Read a true/false option: a JSON boolean, 1 / 0, or true/false, yes/no, on/off in any case."""
    if _absent(value):
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in TRUE + FALSE:
        return value.strip().lower() in TRUE
    api_error(400, code, f"'{name}' must be true or false (or 1 / 0), got {_shown(value)}.")


def choice(
    value: Any, name: str, choices: Sequence[str], *, default: str, code: str = "invalid_parameter"
) -> str:
    """Read one of a few words, in any case."""
    if _absent(value):
        return default
    if not isinstance(value, str) or value.strip().lower() not in choices:
        api_error(400, code, f"'{name}' must be one of {', '.join(choices)}, got {_shown(value)}.")
    return value.strip().lower()


def moment(value: str | None, name: str) -> datetime | None:
    """Read an ISO 8601 date or time (UTC when it names no zone)."""
    if not value:
        return None
    text = value.strip().replace("Z", "+00:00")
    # An unencoded "+02:00" arrives as " 02:00" (a query string's + is a space).
    candidates = [text, "+".join(text.rsplit(" ", 1))] if " " in text else [text]
    for candidate in candidates:
        try:
            parsed = datetime.fromisoformat(candidate)
            break
        except ValueError:
            continue
    else:
        api_error(400, "invalid_parameter", f"'{name}' must be an ISO 8601 date or time, e.g. 2024-05-01.")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
