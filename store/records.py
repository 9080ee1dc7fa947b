"""What the store keeps: ids, names, formats, and the two record types.

An id is 32 lowercase hex digits (a millisecond timestamp, then 80 random bits), so ids sort by
time and an id can never name a path outside the store.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from PIL import Image

from store.exif import finite

ID_PATTERN = re.compile(r"\A[0-9a-f]{32}\Z")
MAX_NAME_CHARS = 64
MAX_LABEL_CHARS = 64
# What a name, a label or a text filter may not hold: control characters (C0, DEL, C1), invisible
# or direction-changing format characters, line and paragraph separators. Written as a regex class
# so that the OpenAPI patterns of these fields (blueprints/gallery.py) are the very same rule.
FORBIDDEN_CHARS = (
    r"\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u180e"
    r"\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb"
)
# Lone surrogates too (JSON can carry "\ud800"; it cannot be stored as UTF-8), which no JSON
# Schema pattern can name.
FORBIDDEN = re.compile(f"[{FORBIDDEN_CHARS}\\ud800-\\udfff]")
PENDING, DONE, FAILED = "pending", "done", "failed"
THUMB_STATUSES = (PENDING, DONE, FAILED)

# The stored file's extension comes from the decoded format, never from the upload's name.
# MPO is what Pillow calls many phones' JPEGs (a JPEG with extra frames): browsers show it as JPEG.
EXT_BY_FORMAT = {
    "PNG": "png",
    "JPEG": "jpg",
    "MPO": "jpg",
    "GIF": "gif",
    "BMP": "bmp",
    "WEBP": "webp",
    "TIFF": "tif",
}
MIME_BY_FORMAT = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "GIF": "image/gif",
    "BMP": "image/bmp",
    "WEBP": "image/webp",
    "TIFF": "image/tiff",
}


class StoreError(RuntimeError):
    """The store could not do what was asked; `reason` is the metric label (disk, database)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class InvalidImageId(ValueError):
    """A string that is not a store id; such an id names no image."""


@dataclass(frozen=True)
class NewImage:
    """An image to keep, with where it came from and what the model said."""

    data: bytes
    format: str
    width: int
    height: int
    endpoint: str
    model: str | None = None
    prediction: str | None = None
    confidence: float | None = None  # a fraction from 0 to 1, whatever unit the route answers in
    label: str | None = None
    original_name: str | None = None


@dataclass(frozen=True)
class StoredImage:
    """One row of the store."""

    id: str
    created_at: datetime
    endpoint: str
    model: str | None
    prediction: str | None
    confidence: float | None
    label: str | None
    labelled_at: datetime | None
    original_name: str | None
    file_name: str
    byte_size: int
    sha256: str
    format: str
    mime: str
    width: int
    height: int
    exif: dict[str, Any] | None
    thumb_status: str
    thumb_error: str | None
    thumb_attempts: int
    thumb_updated_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> StoredImage:
        """Build a record from a database row, its times in UTC."""
        values = dict(row)
        values.setdefault("exif", None)  # read without it (SUMMARY_COLUMNS)
        for key in ("created_at", "labelled_at", "thumb_updated_at"):
            if values[key] is not None:
                values[key] = as_utc(values[key])  # SQLite gives naive datetimes back; they are UTC
        return cls(**values)

    @property
    def gps(self) -> dict[str, float | None] | None:
        """Return the position in decimal degrees, when the EXIF has one."""
        return (self.exif or {}).get("GPS")


def as_utc(moment: datetime) -> datetime:
    """Return a moment in UTC; a naive one is taken as UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def validate_id(image_id: str) -> str:
    """Return the id when it has the store's format, else raise InvalidImageId."""
    if not isinstance(image_id, str) or not ID_PATTERN.match(image_id):
        raise InvalidImageId(f"not an image id: {image_id!r}")
    return image_id


def new_id(now: float | None = None) -> str:
    """Return a fresh id: 12 hex digits of milliseconds since the epoch, then 20 random ones."""
    millis = int((time.time() if now is None else now) * 1000)
    return f"{millis:012x}{secrets.token_hex(10)}"


def clean_name(value: Any, what: str) -> str | None:
    """Return a model or endpoint name as stored (1-64 characters, none FORBIDDEN), or None."""
    if value is None:
        return None
    value = str(value).strip()
    if not value:
        return None
    if len(value) > MAX_NAME_CHARS or FORBIDDEN.search(value):
        raise ValueError(f"{what} must be at most {MAX_NAME_CHARS} characters, with no control characters")
    return value


def extension_for(fmt: str) -> str:
    """Return the file extension for a decoded format ("bin" for one without a known name)."""
    ext = EXT_BY_FORMAT.get(fmt) or fmt.lower()
    return ext if re.fullmatch(r"[a-z0-9]{1,5}", ext) else "bin"


def mime_for(fmt: str) -> str:
    """Return the content type of a decoded format."""
    return MIME_BY_FORMAT.get(fmt) or Image.MIME.get(fmt) or "application/octet-stream"


def clean_label(value: Any) -> str | None:
    """Return a label as stored (trimmed text, 1-64 characters, none FORBIDDEN), or None to clear it."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError("label must be a string (or a whole number), or null to clear it")
    value = str(value).strip()
    if not value:
        raise ValueError("label must not be empty; send null to clear it")
    if len(value) > MAX_LABEL_CHARS or FORBIDDEN.search(value):
        raise ValueError(f"label must be at most {MAX_LABEL_CHARS} characters, with no control characters")
    return value


def new_row(
    new: NewImage,
    *,
    image_id: str,
    file_name: str,
    fmt: str,
    sha256: str,
    exif: dict[str, Any] | None,
    created_at: datetime | None,
    now: datetime,
) -> dict[str, Any]:
    """Return the row that records a new image (its thumbnail pending)."""
    return {
        "id": image_id,
        "created_at": as_utc(created_at) if created_at else now,
        "endpoint": short_name(new.endpoint) or "unknown",
        "model": short_name(new.model),
        # A model's text may hold line breaks; only a NUL, which PostgreSQL refuses, goes.
        "prediction": None if new.prediction is None else str(new.prediction).replace("\x00", "")[:10_000],
        "confidence": fraction(new.confidence),
        "label": clean_label(new.label),
        "labelled_at": now if new.label is not None else None,
        "original_name": (new.original_name or None) and printable(new.original_name, 255),
        "file_name": file_name,
        "byte_size": len(new.data),
        "sha256": sha256,
        "format": fmt,
        "mime": mime_for(fmt),
        "width": int(new.width),
        "height": int(new.height),
        "exif": exif,
        "thumb_status": PENDING,
        "thumb_error": None,
        "thumb_attempts": 0,
        "thumb_updated_at": now,
    }


def fraction(confidence: float | None) -> float | None:
    """Return a confidence as kept: a fraction from 0 to 1 (a percentage is a caller's bug)."""
    value = finite(confidence) if confidence is not None else None
    if value is not None and not 0.0 <= value <= 1.0:
        raise ValueError(f"confidence must be a fraction from 0 to 1, got {value!r}")
    return value


def printable(value: Any, limit: int) -> str | None:
    """Return text from a client or a model without control characters (PostgreSQL refuses a NUL), cut."""
    value = str(value)
    if not value.isprintable():  # most are: one C call instead of one per character
        value = "".join(c for c in value if c.isprintable())
    return value[:limit] or None


def short_name(value: Any) -> str | None:
    """Return a name that code passes (endpoint, model) as kept: printable, cut to the column's size."""
    if value is None:
        return None
    value = str(value).strip()
    if not value.isprintable():
        value = "".join(c for c in value if c.isprintable())
    return value[:MAX_NAME_CHARS] or None
