"""The gallery's answers: their pydantic schemas, the OpenAPI components of its routes, and the JSON
a stored image is answered as (`summary`, `metadata`, the shapes of ImageSummary and ImageMeta).

blueprints/openapi.py reads SCHEMAS, PARAMETERS and RESPONSES from the blueprint's module, which
imports them from here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from flask import url_for
from pydantic import BaseModel, Field

from store import StoredImage
from store.records import FORBIDDEN_CHARS, MAX_LABEL_CHARS, MAX_NAME_CHARS


class ImageCreated(BaseModel):
    """The id of a stored upload and the URL of its metadata."""

    id: str
    url: str


class Thumbnail(BaseModel):
    """A thumbnail's state: made in the background, pending until then."""

    status: Literal["pending", "done", "failed"]
    url: str
    error: str | None = None
    attempts: int


class GpsPosition(BaseModel):
    """Where a photo was taken, from its EXIF, in decimal degrees (altitude in metres)."""

    latitude: float
    longitude: float
    altitude: float | None = None


class ImageSummary(BaseModel):
    """One stored image, without its EXIF."""

    id: str
    url: str
    download_url: str
    created_at: str
    endpoint: str
    model: str | None = None
    prediction: str | None = None
    # One unit for every route: /api/predict answers its certainty in percent, the store keeps 0-1.
    confidence: float | None = Field(None, ge=0, le=1, description="the model's confidence, from 0 to 1")
    label: str | None = None
    labelled_at: str | None = None
    original_name: str | None = None
    byte_size: int
    format: str
    mime: str
    width: int
    height: int
    sha256: str
    thumbnail: Thumbnail


class ImageMeta(ImageSummary):
    """One stored image with its EXIF (bytes as text or {"base64": ...}) and GPS position."""

    exif: dict[str, Any] | None = None
    gps: GpsPosition | None = None


class ImagePage(BaseModel):
    """One page of stored images, newest first."""

    items: list[ImageSummary]
    page: int
    per_page: int
    total: int
    pages: int


class ThumbnailPending(BaseModel):
    """The thumbnail is not made yet: ask again after `retry_after_s`."""

    id: str
    status: Literal["pending"]
    url: str
    retry_after_s: int


# The rules of store.records (clean_name, clean_label, FORBIDDEN) as OpenAPI patterns: surrounding
# white space is trimmed, what remains has at most 64 characters and none of the forbidden ones.
_F = FORBIDDEN_CHARS
NAME_PATTERN = rf"^\s*([^\s{_F}]([^{_F}]{{0,{MAX_NAME_CHARS - 2}}}[^\s{_F}])?)?\s*$"
LABEL_PATTERN = rf"^\s*[^\s{_F}]([^{_F}]{{0,{MAX_LABEL_CHARS - 2}}}[^\s{_F}])?\s*$"
FILTER_PATTERN = rf"^[^{_F}]*$"


class LabelRequest(BaseModel):
    """The correct answer for an image (1-64 characters, or a whole number), or null to clear it."""

    # The pattern is only documented here: set_label checks it with store.records.clean_label.
    label: (
        Annotated[str, Field(json_schema_extra={"pattern": LABEL_PATTERN})]
        | Annotated[int, Field(ge=-(10**63 - 1), le=10**64 - 1)]
        | None
    )


SCHEMAS = (ImageCreated, ImageMeta, ImagePage, ThumbnailPending, LabelRequest)
# The refusals of the routes that need the admin (blueprints/auth.py); any module may reference them.
_ERROR_BODY = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
RESPONSES = {
    "Unauthorized": {
        "description": "ADMIN_TOKEN is set and the request has no or a wrong "
        "`Authorization: Bearer <token>` (codes credentials_required, invalid_credentials).",
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
        "content": _ERROR_BODY,
    },
    "AdminOnly": {
        "description": "No ADMIN_TOKEN is set and the client is not on this machine (code admin_only).",
        "content": _ERROR_BODY,
    },
}


def _text(name: str, pattern: str, description: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "schema": {"type": "string", "pattern": pattern},
        "description": description,
        **extra,
    }


PARAMETERS = {
    "ModelName": _text(
        "model", NAME_PATTERN, "the model the image is for; also a form field", example="numbers"
    ),
    "Label": _text(
        "label", LABEL_PATTERN, "its correct answer (the admin only); also a form field", example="7"
    ),
    "ExportModel": _text("model", NAME_PATTERN, "only this model, e.g. numbers"),
    "ModelFilter": _text("model", FILTER_PATTERN, "only this model"),
    "LabelFilter": _text("label", FILTER_PATTERN, "only images with this label"),
    "EndpointFilter": _text("endpoint", FILTER_PATTERN, "only from this endpoint (upload, ...)"),
}


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


def summary(record: StoredImage) -> dict[str, Any]:
    """Describe a record as JSON, without EXIF."""
    return {
        "id": record.id,
        "url": url_for("gallery.get_image", image_id=record.id),
        "download_url": url_for("gallery.download", image_id=record.id),
        "created_at": _iso(record.created_at),
        "endpoint": record.endpoint,
        "model": record.model,
        "prediction": record.prediction,
        "confidence": record.confidence,
        "label": record.label,
        "labelled_at": _iso(record.labelled_at),
        "original_name": record.original_name,
        "byte_size": record.byte_size,
        "format": record.format,
        "mime": record.mime,
        "width": record.width,
        "height": record.height,
        "sha256": record.sha256,
        "thumbnail": {
            "status": record.thumb_status,
            "url": url_for("gallery.vignette", image_id=record.id),
            "error": record.thumb_error,
            "attempts": record.thumb_attempts,
        },
    }


def metadata(record: StoredImage) -> dict[str, Any]:
    """Describe a record as JSON, with EXIF and GPS."""
    return {**summary(record), "exif": record.exif, "gps": record.gps}
