"""The Celery app the thumbnail worker runs, configured like the web app (file, then environment).

Start it from the project root with the same settings as the web app (VISION_CONFIG file and/or
environment):

    CELERY_BROKER_URL=redis://127.0.0.1:6379/0 celery -A store.celery_app worker --loglevel=INFO --concurrency=1

The web side only publishes (store.thumbnails.publisher_app); it never builds this app.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from store.images import ImageStore, resolve_image_dir
from store.records import StoreError, validate_id
from store.schema import default_database_url
from store.thumbnails import TASK_NAME, make_thumbnail


def create_worker_app(overrides: dict[str, Any] | None = None):
    """Return the Celery app the worker runs, configured like the web app (file, then env)."""
    from celery import Celery

    root = Path(__file__).resolve().parent.parent
    if str(root) not in sys.path:
        # The `celery` script puts the working folder on sys.path only while it imports this
        # module; the app's config module (at the project root) is imported after that.
        sys.path.insert(0, str(root))
    from config import ConfigError, load_config

    settings = load_config(overrides)
    broker = settings["CELERY_BROKER_URL"]
    if not broker:
        raise ConfigError(
            "CELERY_BROKER_URL must be set to run the thumbnail worker (celery -A store.celery_app worker)"
        )
    # The same defaults as the web app: Flask's instance folder is <root>/instance.
    database_url = settings["DATABASE_URL"] or default_database_url(root / "instance")
    image_dir = resolve_image_dir(root, settings["IMAGE_DIR"])
    size = settings["THUMBNAIL_SIZE"]

    celery_app = Celery("vision", broker=broker)
    celery_app.conf.update(
        task_ignore_result=True,
        # Acknowledge after the work, so a worker that dies mid-task gives it back to the queue.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
    )
    stores: dict[int, ImageStore] = {}
    lock = threading.Lock()

    def worker_store() -> ImageStore:
        # One store per process, created after the prefork pool forks (engines must not cross a fork).
        with lock:
            store = stores.get(os.getpid())
            if store is None:
                store = stores[os.getpid()] = ImageStore(database_url, image_dir, thumbnail_size=size)
            return store

    @celery_app.task(
        name=TASK_NAME,
        autoretry_for=(StoreError, SQLAlchemyError, OSError),
        retry_backoff=2,
        retry_backoff_max=60,
        max_retries=8,
    )
    def thumbnail(image_id: str) -> str:
        """Make one thumbnail in the worker."""
        return make_thumbnail(worker_store(), validate_id(image_id))

    return celery_app


_worker_app = None


def __getattr__(name: str):
    # `celery -A store.celery_app` looks up `store.celery_app.app`; it is built only then, so
    # importing this module (tests do) never reads the worker's settings.
    global _worker_app
    if name == "app":
        if _worker_app is None:
            _worker_app = create_worker_app()
        return _worker_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
