"""Thumbnails ("vignettes"), made in the background so that no web request waits for one.

Two runners, chosen by CELERY_BROKER_URL:
- unset (embedded default): a pool of THUMBNAIL_WORKERS threads inside each web process;
- set: Celery tasks on Redis, run by a separate worker process started from the project root
  with the same settings as the web app (VISION_CONFIG file and/or environment):

      CELERY_BROKER_URL=redis://127.0.0.1:6379/0 celery -A models.tasks worker --loglevel=INFO --concurrency=1

  If the broker cannot be reached, the web process makes the thumbnail itself (local pool) and
  tries the broker again after BROKER_RETRY_SECONDS; uploads never fail because of it.

Either way a sweeper thread re-dispatches thumbnails still pending after `retry_seconds` (a
task lost with a crashed worker, a full queue) and marks them failed after `max_attempts`.
Making a thumbnail is idempotent, so a duplicate task costs only time.
"""

from __future__ import annotations

import logging
import os
import queue
import secrets
import sys
import threading
import time
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError
from sqlalchemy.exc import SQLAlchemyError

from models.store import DONE, FAILED, FAILURES, ImageStore, StoreError, validate_id

log = logging.getLogger(__name__)

TASK_NAME = "vision.thumbnail"
BROKER_RETRY_SECONDS = 30.0
_DECODE_ERRORS = (
    UnidentifiedImageError,
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    Image.DecompressionBombError,
)


def render_thumbnail(source: Path, size: int) -> Image.Image:
    """Decode an image and shrink it to fit size x size, upright, on white, as RGB."""
    with Image.open(source) as img:
        img.draft("RGB", (size, size))  # JPEG: decode at a reduced scale, much faster for photos
        img = ImageOps.exif_transpose(img)
        img.thumbnail((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            flat = Image.new("RGB", rgba.size, "white")
            flat.paste(rgba, mask=rgba.getchannel("A"))
            return flat
        return img.convert("RGB")


def write_jpeg(image: Image.Image, target: Path) -> None:
    """Save a JPEG atomically: a temporary name, then a rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".tmp-{target.stem}-{secrets.token_hex(4)}.jpg")
    try:
        image.save(temp, "JPEG", quality=85, optimize=True)
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)


def make_thumbnail(store: ImageStore, image_id: str) -> str:
    """Make one image's thumbnail and record the outcome; return the status (or "missing").

    An image that cannot be decoded is marked failed with the error. A disk or database error
    raises, leaving the row pending, so the caller (or the sweeper) tries again.
    """
    record = store.get(image_id)
    if record is None:
        return "missing"
    target = store.thumbnail_path(image_id)
    if record.thumb_status == DONE and target.is_file():
        return DONE
    source = store.file_path(record)
    if not source.is_file():
        FAILURES.labels("thumbnail").inc()
        store.mark_thumbnail(image_id, FAILED, "the original file is missing")
        return FAILED
    try:
        thumb = render_thumbnail(source, store.thumbnail_size)
    except _DECODE_ERRORS as exc:
        FAILURES.labels("thumbnail").inc()
        store.mark_thumbnail(image_id, FAILED, f"cannot decode the image: {type(exc).__name__}: {exc}")
        return FAILED
    write_jpeg(thumb, target)
    store.mark_thumbnail(image_id, DONE)
    return DONE


def _run_job(store: ImageStore, image_id: str) -> None:
    """Make a thumbnail in this process, logging (never raising) what goes wrong."""
    try:
        make_thumbnail(store, image_id)
    except (StoreError, SQLAlchemyError) as exc:
        FAILURES.labels("database").inc()
        log.error("thumbnail of %s left pending, database error: %s", image_id, exc)
    except OSError as exc:
        FAILURES.labels("disk").inc()
        log.error("thumbnail of %s left pending, disk error: %s", image_id, exc)
    except Exception:
        FAILURES.labels("unexpected").inc()
        log.exception("thumbnail of %s left pending", image_id)


class _Workers:
    """Daemon threads draining a bounded queue of ids, started on first use."""

    def __init__(self, name: str, handle, *, workers: int, queue_size: int):
        self.name = name
        self.handle = handle
        self.count = workers
        self.queue: queue.Queue[str | None] = queue.Queue(maxsize=queue_size)
        self.threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.closed = False

    def put(self, image_id: str) -> bool:
        if self.closed:
            return False
        if not self.threads:
            with self._lock:
                if not self.threads:
                    for n in range(self.count):
                        thread = threading.Thread(target=self._loop, name=f"{self.name}-{n}", daemon=True)
                        thread.start()
                        self.threads.append(thread)
        try:
            self.queue.put_nowait(image_id)
        except queue.Full:
            log.warning("%s queue is full; %s waits for the retry sweep", self.name, image_id)
            return False
        return True

    def _loop(self) -> None:
        while True:
            image_id = self.queue.get()
            try:
                if image_id is None:
                    return
                self.handle(image_id)
            finally:
                self.queue.task_done()

    def drain(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def close(self, timeout: float = 5.0) -> None:
        self.closed = True
        if self.threads:
            self.drain(timeout)
            for _ in self.threads:
                try:
                    self.queue.put(None, timeout=0.5)
                except queue.Full:
                    break
            for thread in self.threads:
                thread.join(timeout=1)


class Thumbnails:
    """Schedule thumbnails: on the local pool, or on Celery with the local pool as fallback."""

    def __init__(
        self,
        store: ImageStore,
        *,
        broker_url: str | None = None,
        workers: int = 1,
        retry_seconds: float = 60.0,
        max_attempts: int = 5,
        queue_size: int = 1000,
        broker_retry_seconds: float = BROKER_RETRY_SECONDS,
    ):
        self.store = store
        self.broker_url = broker_url
        self.mode = "celery" if broker_url else "local"
        self.retry_seconds = retry_seconds
        self.max_attempts = max_attempts
        self.broker_retry_seconds = broker_retry_seconds
        self.local = _Workers(
            "thumbnail", lambda i: _run_job(store, i), workers=workers, queue_size=queue_size
        )
        self.publisher: _Workers | None = None
        self.celery: Any = None
        self._broker_down_until = 0.0
        if broker_url:
            self.celery = publisher_app(broker_url)
            # One thread publishes, so a broker that is slow to refuse delays no request.
            self.publisher = _Workers("thumbnail-publish", self._publish, workers=1, queue_size=queue_size)
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None
        self._sweeper_lock = threading.Lock()

    def schedule(self, image_id: str) -> bool:
        """Queue a thumbnail without waiting; False when it must wait for the retry sweep."""
        self.start()
        if self.publisher is not None:
            return self.publisher.put(image_id)
        return self.local.put(image_id)

    def _publish(self, image_id: str) -> None:
        if time.monotonic() < self._broker_down_until:
            self.local.put(image_id)
            return
        try:
            self.celery.send_task(TASK_NAME, args=[image_id], retry=False)
        except Exception as exc:  # kombu, redis and socket errors all mean "not queued"
            FAILURES.labels("broker_unavailable").inc()
            self._broker_down_until = time.monotonic() + self.broker_retry_seconds
            log.warning(
                "thumbnail broker unavailable (%s): making thumbnails in this process for %.0f s",
                exc,
                self.broker_retry_seconds,
            )
            self.local.put(image_id)

    def start(self) -> None:
        """Start the retry sweeper (once)."""
        if self._sweeper is not None or self._stop.is_set():
            return
        with self._sweeper_lock:
            if self._sweeper is None:
                self._sweeper = threading.Thread(
                    target=self._sweep_loop, name="thumbnail-sweeper", daemon=True
                )
                self._sweeper.start()

    def sweep(self) -> list[str]:
        """Re-dispatch thumbnails pending for longer than retry_seconds; return their ids."""
        ids = self.store.claim_stale(older_than=self.retry_seconds, max_attempts=self.max_attempts)
        for image_id in ids:
            log.info("retrying the thumbnail of %s", image_id)
            if self.publisher is not None:
                self.publisher.put(image_id)
            else:
                self.local.put(image_id)
        return ids

    def _sweep_loop(self) -> None:
        while not self._stop.wait(self.retry_seconds):
            try:
                self.sweep()
            except Exception as exc:  # the database may be down: try again next round
                log.warning("thumbnail retry sweep failed: %s", exc)

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until queued local work is done (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        if self.publisher is not None and not self.publisher.drain(timeout):
            return False
        return self.local.drain(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        """Stop the sweeper and the threads, finishing queued work first."""
        self._stop.set()
        if self.publisher is not None:
            self.publisher.close()
        self.local.close()
        if self._sweeper is not None:
            self._sweeper.join(timeout=1)


def start_thumbnails(store: ImageStore, **options: Any) -> Thumbnails:
    """Attach a thumbnail runner to a store; start the sweeper when thumbnails are pending."""
    thumbnails = Thumbnails(store, **options)
    store.thumbnails = thumbnails
    store.on_saved = thumbnails.schedule
    try:
        pending = store.pending_count()
    except (StoreError, SQLAlchemyError) as exc:
        log.warning("cannot count pending thumbnails yet: %s", exc)
        pending = 1  # unknown: let the sweeper look once the database answers
    if pending:
        thumbnails.start()
    return thumbnails


# --- Celery ---------------------------------------------------------------------------------


def publisher_app(broker_url: str):
    """Return a Celery app that only sends thumbnail tasks (the web side)."""
    from celery import Celery

    celery_app = Celery("vision-web", broker=broker_url, set_as_current=False)
    celery_app.conf.update(
        broker_connection_timeout=2,
        broker_connection_retry=False,
        broker_transport_options={"socket_connect_timeout": 2, "socket_timeout": 5},
        task_ignore_result=True,
    )
    return celery_app


def create_worker_app(overrides: dict[str, Any] | None = None):
    """Return the Celery app the worker runs, configured like the web app (file, then env)."""
    from celery import Celery

    root = Path(__file__).resolve().parent.parent
    if str(root) not in sys.path:
        # The `celery` script puts the working folder on sys.path only while it imports this
        # module; the app's config module (at the project root) is imported after that.
        sys.path.insert(0, str(root))
    from config import ConfigError, load_config
    from models.store import default_database_url, resolve_image_dir

    settings = load_config(overrides)
    broker = settings["CELERY_BROKER_URL"]
    if not broker:
        raise ConfigError(
            "CELERY_BROKER_URL must be set to run the thumbnail worker (celery -A models.tasks worker)"
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
    # `celery -A models.tasks` looks up `models.tasks.app`; it is built only then, so the web
    # process, which imports this module too, never reads the worker's settings.
    global _worker_app
    if name == "app":
        if _worker_app is None:
            _worker_app = create_worker_app()
        return _worker_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
