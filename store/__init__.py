"""The image store: every kept image is a file under IMAGE_DIR plus a database row, with its thumbnail.

`init_app(app)` creates it once per app (as flaskr's `db.init_app`), in `app.extensions["store"]`;
routes reach it through `get_store()`. The modules, each one concern:

    records.py     ids, names, formats, NewImage / StoredImage, StoreError
    schema.py      the table, versioned migrations, engines (SQLite WAL, PostgreSQL)
    exif.py        EXIF to JSON (capped), GPS in decimal degrees
    images.py      ImageStore: file layout, labels, thumbnail state, opening
    saving.py      its writes: file and row together or neither, many with one commit
    queries.py     its reads: a record, a page (never the EXIF), the size, models, pending thumbnails
    export.py      the labelled images as a zip for retraining (formula-safe CSV)
    journal.py     queued images on disk before the answer; what a dead process left is kept at start
    writer.py      the background writer behind `submit()` (group commit)
    render.py      a canvas's thumbnail from its request's decoded pixels (OpenCV)
    retention.py   unlabelled images deleted by age, count and bytes; the store's size in /metrics
    pool.py        the one thread pool the writer and the thumbnail runners share
    thumbnails.py  thumbnails on local threads or Celery, and the retry sweeper
    celery_app.py  the Celery worker's app (`celery -A store.celery_app worker`)
    metrics.py     the Prometheus counters and gauges
"""

from __future__ import annotations

import logging
from pathlib import Path

from flask import Flask, current_app

from store.images import ImageStore, resolve_image_dir
from store.records import InvalidImageId, NewImage, StoredImage, StoreError
from store.retention import Retention
from store.schema import default_database_url

__all__ = ["ImageStore", "InvalidImageId", "NewImage", "StoreError", "StoredImage", "get_store", "init_app"]

log = logging.getLogger(__name__)


def init_app(app: Flask) -> ImageStore:
    """Create the image store, its thumbnail runner and retention; keep it in app.extensions["store"].

    With SAVE_IMAGES on, the database is opened now (journals of ended processes kept, retention
    started); else at its first use, so an app that keeps nothing writes nothing (not even the
    default SQLite file in the instance folder).
    """
    database_url = app.config["DATABASE_URL"] or default_database_url(app.instance_path)
    image_dir = resolve_image_dir(Path(app.root_path), app.config["IMAGE_DIR"])
    store = ImageStore(
        database_url,
        image_dir,
        thumbnail_size=app.config["THUMBNAIL_SIZE"],
        queue_size=app.config["STORE_QUEUE_SIZE"],
        queue_wait=app.config["STORE_QUEUE_WAIT_MS"] / 1000,
        keep_endpoints=app.config["SAVE_ENDPOINTS"],
        sync_mode=app.config["STORE_SYNC"],
    )
    store.retention = Retention(
        store,
        days=app.config["RETENTION_DAYS"],
        max_images=app.config["RETENTION_MAX_IMAGES"],
        max_bytes=app.config["RETENTION_MAX_BYTES"],
        interval=app.config["RETENTION_CHECK_SECONDS"],
    )
    store.start_thumbnails(
        broker_url=app.config["CELERY_BROKER_URL"],
        workers=app.config["THUMBNAIL_WORKERS"],
        retry_seconds=float(app.config.get("THUMBNAIL_RETRY_SECONDS", 60)),
    )
    if app.config["SAVE_IMAGES"]:
        try:
            store.ensure_schema()
        except StoreError as exc:
            # Predictions must go on without the store: writes retry the schema, and fail counted.
            log.error("image store unavailable at start-up (DATABASE_URL=%s): %s", store.engine.url, exc)
    log.info(
        "image store: %s, files in %s, thumbnails %s",
        store.engine.url,  # the URL's repr hides a password
        image_dir,
        "on Celery" if app.config["CELERY_BROKER_URL"] else "in-process",
    )
    app.extensions["store"] = store
    return store


def get_store() -> ImageStore:
    """Return the current app's image store."""
    return current_app.extensions["store"]
