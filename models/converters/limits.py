"""Bounds on what an uploaded export may declare, checked before anything is read or allocated."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from models.runtime import ModelFileError

# A Teachable Machine export is a MobileNet of 2-10 MB; MobileNetV2 alpha 1.4 is 24 MB of float32.
# These bounds leave room for any real image classifier and refuse what would exhaust a worker.
MAX_WEIGHT_BYTES = 256 * 1024 * 1024
# Largest activation per image (MobileNetV2 alpha 1.4 at 224x224 peaks at 1.7 M values).
MAX_TENSOR_ELEMENTS = 1 << 25
MAX_INPUT_SIDE = 1024
MAX_LAYERS = 5000
MAX_NESTING = 16
MAX_CONFIG_BYTES = 16 * 1024 * 1024
# Largest kernel, stride, dilation or padding a layer may declare.
MAX_WINDOW = 256
MAX_CHANNELS = 1 << 16


def check_shape(shape: Iterable[Any], what: str, *, limit: int = MAX_TENSOR_ELEMENTS) -> tuple[int, ...]:
    """Return a declared shape as ints, or raise ModelFileError when it is malformed or too large."""
    try:
        dims = list(shape)
    except TypeError:
        raise ModelFileError(f"{what}: the shape {shape!r} is not a list of sizes") from None
    if len(dims) > 8:
        raise ModelFileError(f"{what}: the shape has {len(dims)} dimensions (at most 8)")
    count = 1
    out = []
    for dim in dims:
        # bool is an int subclass; a float like 3.0 from JSON is not a size either.
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 0:
            raise ModelFileError(f"{what}: the shape {dims} has a size that is not a whole number >= 0")
        count *= dim
        if count > limit:
            raise ModelFileError(f"{what}: the shape {dims} declares more than {limit} values")
        out.append(dim)
    return tuple(out)


def check_int(value: Any, what: str, *, low: int = 0, high: int = MAX_CHANNELS) -> int:
    """Return a declared whole number within [low, high], or raise ModelFileError."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON writers may emit 16.0 for 16
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ModelFileError(f"{what} must be a whole number from {low} to {high}, got {value!r}")
    return value


def check_pair(value: Any, what: str, *, low: int = 1, high: int = MAX_WINDOW) -> tuple[int, int]:
    """Return a (height, width) setting given as one number or two, within [low, high]."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ModelFileError(f"{what} must have two values (height, width), got {value!r}")
        return check_int(value[0], what, low=low, high=high), check_int(value[1], what, low=low, high=high)
    number = check_int(value, what, low=low, high=high)
    return number, number
