"""The image store as a collection: the list of images (GET /images), the export, and /gallery.

The routes live on the gallery blueprint (blueprints.gallery imports this module last).
"""

from __future__ import annotations

import logging
import math
import tempfile
from datetime import UTC, date, datetime, time, timedelta

from flask import current_app, jsonify, render_template, request, send_file
from sqlalchemy.exc import SQLAlchemyError

from blueprints.auth import require_admin
from blueprints.errors import api_error
from blueprints.gallery import bp
from blueprints.gallery_schemas import summary
from blueprints.options import flag, moment, whole_number
from store import StoreError, get_store
from store.records import FORBIDDEN, clean_name

log = logging.getLogger(__name__)

MAX_PER_PAGE = 100


def _int_arg(name: str, default: int, minimum: int, maximum: int) -> int:
    return whole_number(request.args.get(name), name, default=default, minimum=minimum, maximum=maximum)


def _text_arg(name: str) -> str | None:
    """Read a text filter; control characters are a client's error (400), never the database's."""
    value = request.args.get(name) or None
    if value is not None and FORBIDDEN.search(value):
        api_error(400, "invalid_parameter", f"'{name}' must not hold control characters.")
    return value


@bp.get("/images")
def list_images():
    """List stored images, newest first, a page at a time.
    ---
    get:
      summary: List stored images
      parameters:
        - {name: page, in: query, schema: {type: integer, minimum: 1, maximum: 1000000, default: 1}}
        - {name: per_page, in: query, schema: {type: integer, minimum: 1, maximum: 100, default: 24}}
        - {$ref: '#/components/parameters/ModelFilter'}
        - {$ref: '#/components/parameters/LabelFilter'}
        - {name: labelled, in: query, schema: {type: boolean}, description: 'only labelled (or unlabelled)'}
        - {$ref: '#/components/parameters/EndpointFilter'}
        - {name: date, in: query, schema: {type: string, format: date}, description: 'only this day (UTC)'}
        - {name: since, in: query, schema: {type: string, format: date-time}, description: 'from (inclusive)'}
        - {name: until, in: query, schema: {type: string, format: date-time}, description: 'to (exclusive)'}
      responses:
        200:
          description: One page.
          content:
            application/json:
              schema: {$ref: '#/components/schemas/ImagePage'}
        400:
          $ref: '#/components/responses/BadRequest'
          description: A parameter out of range, not a date, or with control characters.
    """
    page = _int_arg("page", 1, 1, 1_000_000)
    per_page = _int_arg("per_page", 24, 1, MAX_PER_PAGE)
    since, until = moment(request.args.get("since"), "since"), moment(request.args.get("until"), "until")
    day = request.args.get("date")
    if day:
        try:
            start = datetime.combine(date.fromisoformat(day), time(0), tzinfo=UTC)
        except ValueError:
            api_error(400, "invalid_parameter", "'date' must be a day as YYYY-MM-DD.")
        since, until = (
            max(since or start, start),
            min(until or start + timedelta(days=1), start + timedelta(days=1)),
        )
    labelled = flag(request.args.get("labelled"), "labelled", default=None)
    items, total = get_store().list(
        page=page,
        per_page=per_page,
        model=_text_arg("model"),
        label=_text_arg("label"),
        labelled=labelled,
        endpoint=_text_arg("endpoint"),
        since=since,
        until=until,
    )
    return jsonify(
        {
            "items": [summary(r) for r in items],
            "page": page,
            "per_page": per_page,
            "total": total,
            "pages": math.ceil(total / per_page),
        }
    )


@bp.get("/images/export")
@require_admin
def export():
    """Download the labelled images as a zip for retraining (the admin only).
    ---
    get:
      summary: Export labelled images
      description: >
        A zip with `labels.csv` (UTF-8, a header row; columns file, label, id, model, prediction,
        confidence, endpoint, created_at, format, width, height, sha256, where `file` is the path
        inside the zip) and the original files under `images/<id>.<ext>`. The training scripts read
        it with `--extra PATH` (training/gallery_export.py).
      parameters:
        - {$ref: '#/components/parameters/ExportModel'}
      responses:
        200:
          description: The zip; header X-Image-Count says how many images it holds.
          content:
            application/zip: {}
        400:
          $ref: '#/components/responses/BadRequest'
          description: A model name that is too long or holds control characters.
        401: {$ref: '#/components/responses/Unauthorized'}
        403: {$ref: '#/components/responses/AdminOnly'}
    """
    model = request.args.get("model") or None
    try:
        model = clean_name(model, "model")
    except ValueError as exc:
        api_error(400, "invalid_parameter", str(exc))
    # Spooled: small exports stay in memory, large ones go to a temporary file.
    buffer = tempfile.SpooledTemporaryFile(max_size=32 * 1024 * 1024)  # noqa: SIM115 - send_file closes it
    count = get_store().export_zip(buffer, model=model)
    buffer.seek(0)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    response = send_file(
        buffer,
        mimetype="application/zip",
        as_attachment=True,
        download_name=f"labelled-{model or 'all'}-{stamp}.zip",
    )
    response.headers["X-Image-Count"] = str(count)
    return response


@bp.get("/gallery")
def gallery_page():
    """Show the stored images as a grid of thumbnails, with labels that can be corrected."""
    store = get_store()
    try:
        stored = store.models()
    except (StoreError, SQLAlchemyError) as exc:
        log.error("gallery: image database unavailable: %s", exc)
        stored = []
    configured = (
        list(current_app.extensions.get("registry").specs) if "registry" in current_app.extensions else []
    )
    models = sorted(set(stored) | set(configured))
    return render_template(
        "gallery.html",
        models=models,
        thumbnail_size=store.thumbnail_size,
        admin_token_set=bool(current_app.config.get("ADMIN_TOKEN")),
    )
