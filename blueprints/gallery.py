"""The image store over HTTP, one image at a time: uploads, metadata, thumbnails, downloads, labels.

The collection (the list, the export, /gallery) is in blueprints/gallery_browse.py, on this blueprint.
"""

from __future__ import annotations

import logging
import re

from flask import Blueprint, jsonify, request, send_file, url_for
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.routing import BaseConverter

from blueprints import gallery_schemas
from blueprints.auth import ensure_admin, require_admin
from blueprints.errors import api_error, error_response
from blueprints.gallery_schemas import metadata
from blueprints.image_input import load_image, request_options
from blueprints.options import flag
from store import NewImage, StoredImage, StoreError, get_store
from store.records import (
    DONE,
    FAILED,
    ID_PATTERN,
    PENDING,
    clean_label,
    clean_name,
    extension_for,
)

log = logging.getLogger(__name__)

bp = Blueprint("gallery", __name__)
# What /openapi.json says of these routes: blueprints/openapi.py reads them from the blueprint's module.
SCHEMAS = gallery_schemas.SCHEMAS
PARAMETERS = gallery_schemas.PARAMETERS
RESPONSES = gallery_schemas.RESPONSES


class ImageIdConverter(BaseConverter):
    """An image id as the store makes them, so that /images/export is never taken for one."""

    regex = "[0-9a-f]{32}"


bp.record_once(lambda state: state.app.url_map.converters.setdefault("image_id", ImageIdConverter))

UPLOAD_ENDPOINT = "upload"


@bp.errorhandler(StoreError)
def _store_error(exc: StoreError):
    log.error("image store error on %s %s: %s", request.method, request.path, exc)
    if exc.reason == "disk":
        return error_response(
            507, "insufficient_storage", "The image could not be written to disk; it is logged."
        )
    return error_response(503, "store_unavailable", "The image database is unavailable; try again later.")


@bp.errorhandler(SQLAlchemyError)
def _database_error(exc: SQLAlchemyError):
    log.error("image database error on %s %s: %s", request.method, request.path, exc)
    return error_response(503, "store_unavailable", "The image database is unavailable; try again later.")


def _find(image_id: str, *, exif: bool = False) -> StoredImage:
    """Return a stored image (EXIF only when asked) or stop with 404 (an id of the wrong shape names nothing)."""
    record = get_store().get(image_id, exif=exif) if ID_PATTERN.match(image_id) else None
    if record is None:
        api_error(404, "image_not_found", f"No stored image has the id '{image_id[:64]}'.", id=image_id[:64])
    return record


@bp.post("/images")
def upload():
    """Store an uploaded image; its thumbnail is made in the background.
    ---
    post:
      summary: Upload an image to the store
      description: >
        Multipart field `file` (or `image`); raw image bytes and JSON base64 are accepted too.
        Optional fields `model` and `label` file the image under a model with its correct answer.
        The file is stored under a name made from the new id, never the uploaded name.
      parameters:
        - {$ref: '#/components/parameters/ModelName'}
        - {$ref: '#/components/parameters/Label'}
      requestBody: {$ref: '#/components/requestBodies/Upload'}
      responses:
        201:
          description: Stored; `url` gives the metadata.
          headers:
            Location: {description: the metadata URL, schema: {type: string}}
          content:
            application/json:
              schema: {$ref: '#/components/schemas/ImageCreated'}
        400:
          $ref: '#/components/responses/BadRequest'
          description: No file, an empty file, a file name with control characters, or a bad model or label.
        401: {$ref: '#/components/responses/Unauthorized'}
        403:
          $ref: '#/components/responses/AdminOnly'
          description: A label was given by a client that is not the admin (no label needs no credentials).
        413: {$ref: '#/components/responses/TooLarge'}
        415: {$ref: '#/components/responses/NotAnImage'}
        503:
          description: The database is unavailable (507 when the disk is full).
          content:
            application/json:
              schema: {$ref: '#/components/schemas/ErrorResponse'}
    """
    image = load_image(("file", "image"))
    options = request_options()
    try:
        model = clean_name(options.get("model"), "model")
        label = clean_label(options["label"]) if options.get("label") not in (None, "") else None
    except ValueError as exc:
        api_error(400, "invalid_field", str(exc))
    name = re.split(r"[\\/]", image.filename)[-1] if image.filename else None
    if name and not name.isprintable():
        # Refused here, not by the database: PostgreSQL cannot store a NUL, and that is no outage.
        api_error(400, "invalid_filename", "The file name must not hold control characters.")
    if label is not None:
        # A label is what retraining learns from: giving one is labelling, which needs the admin.
        ensure_admin("label images")
    new = NewImage(
        data=image.encoded(),
        format="PNG" if image.format == "ARRAY" else image.format,
        width=image.width,
        height=image.height,
        endpoint=UPLOAD_ENDPOINT,
        model=model,
        label=label,
        # Kept as metadata only (the file is named by id); a client's folders are not our business.
        original_name=name,
    )
    image_id = get_store().save(new)
    url = url_for("gallery.get_image", image_id=image_id)
    response = jsonify({"id": image_id, "url": url})
    response.status_code = 201
    response.headers["Location"] = url
    return response


@bp.get("/images/<image_id:image_id>")
def get_image(image_id: str):
    """Describe a stored image: where it came from, the prediction, label, EXIF and thumbnail.
    ---
    get:
      summary: Metadata of a stored image
      responses:
        200:
          description: 'The metadata; EXIF bytes are text where valid, else {"base64": ...}.'
          content:
            application/json:
              schema: {$ref: '#/components/schemas/ImageMeta'}
        404: {$ref: '#/components/responses/NotFound'}
    """
    return jsonify(metadata(_find(image_id, exif=True)))


@bp.get("/vignette/<image_id:image_id>")
def vignette(image_id: str):
    """Serve an image's thumbnail (JPEG; a small PNG is its own), or say it is still being made.
    ---
    get:
      summary: Thumbnail of a stored image
      responses:
        200:
          description: >-
            The thumbnail, a JPEG at most THUMBNAIL_SIZE pixels on its longer side; a PNG of at most
            1.5x that side and 64 KiB, or 4x and 16 KiB, is its own thumbnail (the original, as
            image/png).
          content:
            image/jpeg: {}
            image/png: {}
        202:
          description: Not made yet; ask again after Retry-After seconds.
          headers:
            Retry-After: {schema: {type: integer}}
          content:
            application/json:
              schema: {$ref: '#/components/schemas/ThumbnailPending'}
        404: {$ref: '#/components/responses/NotFound'}
        422:
          description: The thumbnail could not be made (the error says why).
          content:
            application/json:
              schema: {$ref: '#/components/schemas/ErrorResponse'}
    """
    record = _find(image_id)
    store = get_store()
    if record.thumb_status == DONE:
        path = store.thumbnail_path(record.id)
        if path.is_file():
            # An id's thumbnail never changes, so clients may keep it.
            return send_file(path, mimetype="image/jpeg", max_age=86400, conditional=True)
        original = store.own_thumbnail(record)
        if original is not None:  # a small PNG: no smaller as a JPEG, so none was made
            response = send_file(original, mimetype=record.mime, max_age=86400, conditional=True)
            response.headers["X-Content-Type-Options"] = "nosniff"
            return response
        log.warning("thumbnail of %s is recorded as done but missing; making it again", record.id)
        store.mark_thumbnail(record.id, PENDING)
        if store.thumbnails is not None:
            store.thumbnails.schedule(record.id)
    elif record.thumb_status == FAILED:
        api_error(
            422,
            "thumbnail_failed",
            f"The thumbnail could not be made: {record.thumb_error}",
            id=record.id,
            thumbnail_status=FAILED,
        )
    body = {"id": record.id, "status": PENDING, "url": url_for("gallery.get_image", image_id=record.id)}
    response = jsonify({**body, "retry_after_s": 1})
    response.status_code = 202
    response.headers["Retry-After"] = "1"
    return response


@bp.get("/images/<image_id:image_id>/download")
def download(image_id: str):
    """Send the original file with its content type.
    ---
    get:
      summary: Download the original image
      parameters:
        - {name: inline, in: query, schema: {type: boolean}, description: 'show instead of download'}
      responses:
        200:
          description: The bytes as received, named <id>.<ext>.
          content:
            image/*: {}
        400:
          $ref: '#/components/responses/BadRequest'
          description: An `inline` that is not true or false.
        404: {$ref: '#/components/responses/NotFound'}
    """
    record = _find(image_id)
    path = get_store().file_path(record)
    if not path.is_file():
        log.error("image %s is in the database but its file %s is missing", record.id, path)
        api_error(404, "file_missing", f"The file of image '{record.id}' is missing from the store.")
    inline = flag(request.args.get("inline"), "inline", default=False)
    response = send_file(
        path,
        mimetype=record.mime,
        as_attachment=not inline,
        download_name=f"{record.id}.{extension_for(record.format)}",
        max_age=3600,
        conditional=True,
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@bp.delete("/images/<image_id:image_id>")
@require_admin
def delete_image(image_id: str):
    """Delete a stored image, its thumbnail and its row (the admin only).
    ---
    delete:
      summary: Delete a stored image
      responses:
        204:
          description: Deleted.
        401: {$ref: '#/components/responses/Unauthorized'}
        403: {$ref: '#/components/responses/AdminOnly'}
        404: {$ref: '#/components/responses/NotFound'}
    """
    record = _find(image_id)
    if not get_store().delete(record.id):
        api_error(404, "image_not_found", f"No stored image has the id '{record.id}'.", id=record.id)
    return "", 204


@bp.post("/images/<image_id:image_id>/label")
@require_admin
def set_label(image_id: str):
    """Record the correct answer for an image, for retraining (the admin only).
    ---
    post:
      summary: Label a stored image
      requestBody:
        required: true
        content:
          application/json:
            schema: {$ref: '#/components/schemas/LabelRequest'}
            example: {label: '7'}
      responses:
        200:
          description: Labelled; the new metadata.
          content:
            application/json:
              schema: {$ref: '#/components/schemas/ImageMeta'}
        400:
          $ref: '#/components/responses/BadRequest'
          description: No label field, or a label that is empty, too long or not text.
        401: {$ref: '#/components/responses/Unauthorized'}
        403: {$ref: '#/components/responses/AdminOnly'}
        404: {$ref: '#/components/responses/NotFound'}
    """
    record = _find(image_id)
    body = request.get_json(silent=True) if request.is_json else None
    if body is None and request.form:
        body = request.form.to_dict()
    if not isinstance(body, dict) or "label" not in body:
        api_error(400, "missing_label", 'Send JSON {"label": "7"} (or {"label": null} to clear it).')
    try:
        updated = get_store().set_label(record.id, body["label"])
    except ValueError as exc:
        api_error(400, "invalid_label", str(exc))
    if updated is None:
        api_error(404, "image_not_found", f"No stored image has the id '{record.id}'.", id=record.id)
    return jsonify(metadata(updated))


# The collection: listing, the export and the page (on this blueprint).
from blueprints import gallery_browse  # noqa: E402, F401
