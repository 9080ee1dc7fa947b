"""Thumbnails ("vignettes"), made in the background so that no web request waits for one.

Two runners, chosen by CELERY_BROKER_URL:
- unset (embedded default): a pool of THUMBNAIL_WORKERS threads inside each web process;
- set: Celery tasks on Redis, run by a separate worker process (store.celery_app). If the
  broker cannot be reached, the web process makes the thumbnail itself (local pool) and tries
  the broker again after BROKER_RETRY_SECONDS; uploads never fail because of it.

Either way a sweeper thread re-dispatches thumbnails still pending after `retry_seconds` (a
task lost with a crashed worker, a full queue) and marks them failed after `max_attempts`.
Making a thumbnail is idempotent, so a duplicate task costs only time.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageOps, UnidentifiedImageError
from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError

from models.image import rgb_on_white
from store.metrics import FAILURES, THUMBNAILS
from store.pool import WorkerPool
from store.records import DONE, FAILED, PENDING, StoreError
from store.render import own_thumbnail, serves_itself
from store.schema import images, write_transaction

if TYPE_CHECKING:
    from store.images import ImageStore

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
        return rgb_on_white(img)


def write_jpeg(image: Image.Image, target: Path, temp: Path) -> None:
    """Save a JPEG atomically: written as `temp` (the process's journal folder), then renamed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    # No metadata rides along: Pillow would write the original's text "comment" as the JPEG's
    # comment, and one over 64 KiB (a COM segment's limit) broke every attempt at this thumbnail.
    image.info = {}
    try:
        image.save(temp, "JPEG", quality=85, optimize=True)
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)


def own_original(source: Path, record: Any, size: int) -> bytes | None:
    """Return a stored image's bytes when it is its own thumbnail (store.render.own_thumbnail), else None."""
    if not own_thumbnail(record.format, record.width, record.height, record.byte_size, size):
        return None  # decided from the row: a large file is not read
    data = source.read_bytes()  # at most OWN_THUMBNAIL_BYTES
    return data if serves_itself(data, record.format, record.width, record.height, size) else None


def serves_original(source: Path, record: Any, size: int) -> bool:
    """Say whether a stored image is its own thumbnail and decodes."""
    data = own_original(source, record, size)
    if data is None:
        return False
    with Image.open(io.BytesIO(data)) as img:
        img.load()  # a broken file fails here, as it would for a JPEG thumbnail
    return True


def make_thumbnail(store: ImageStore, image_id: str) -> str:
    """Make one image's thumbnail and record the outcome; return the status (or "missing").

    An image that cannot be decoded is marked failed with the error. A disk or database error
    raises, leaving the row pending, so the caller (or the sweeper) tries again.
    """
    record = store.get(image_id, exif=False)
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
        if serves_original(source, record, store.thumbnail_size):
            store.mark_thumbnail(image_id, DONE)  # /vignette serves the original
            return DONE
        thumb = render_thumbnail(source, store.thumbnail_size)
    except _DECODE_ERRORS as exc:
        FAILURES.labels("thumbnail").inc()
        store.mark_thumbnail(image_id, FAILED, f"cannot decode the image: {type(exc).__name__}: {exc}")
        return FAILED
    write_jpeg(thumb, target, store.journal.temp_path(image_id))
    store.mark_thumbnail(image_id, DONE)
    return DONE


def claim_stale(store: ImageStore, *, older_than: float, max_attempts: int, limit: int = 100) -> list[str]:
    """Claim pending thumbnails untouched for `older_than` seconds, for another try.

    A row is claimed by bumping its attempt count and time only if nobody else has touched
    it since it was read, so several workers sweeping at once never claim the same row twice.
    Rows past `max_attempts` are marked failed.
    """
    store.ensure_schema()
    now = datetime.now(UTC)
    cutoff = now - timedelta(seconds=older_than)
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(images.c.id, images.c.thumb_attempts, images.c.thumb_updated_at)
            .where(images.c.thumb_status == PENDING, images.c.thumb_updated_at < cutoff)
            .order_by(images.c.thumb_updated_at)
            .limit(limit)
        ).all()
    claimed = []
    for image_id, attempts, touched in rows:
        with write_transaction(store.engine) as conn:
            if attempts >= max_attempts:
                values: dict[str, Any] = {
                    "thumb_status": FAILED,
                    "thumb_error": f"no thumbnail after {attempts} attempts",
                    "thumb_updated_at": now,
                }
            else:
                values = {"thumb_attempts": attempts + 1, "thumb_updated_at": now}
            result = conn.execute(
                update(images)
                .where(
                    images.c.id == image_id,
                    images.c.thumb_status == PENDING,
                    images.c.thumb_updated_at == touched,
                )
                .values(**values)
            )
        if result.rowcount and attempts < max_attempts:
            claimed.append(image_id)
        elif result.rowcount:
            FAILURES.labels("thumbnail").inc()
            THUMBNAILS.labels(FAILED).inc()
            log.error("thumbnail of %s given up after %d attempts", image_id, attempts)
    return claimed


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


def _enqueue(pool: WorkerPool[str], image_id: str) -> bool:
    """Queue an id without waiting; False (logged when full) when it must wait for the retry sweep."""
    if pool.put(image_id):
        return True
    if not pool.closed:
        log.warning("%s queue is full; %s waits for the retry sweep", pool.name, image_id)
    return False


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
        self.local: WorkerPool[str] = WorkerPool(
            "thumbnail", lambda i: _run_job(store, i), workers=workers, queue_size=queue_size
        )
        self.publisher: WorkerPool[str] | None = None
        self.celery: Any = None
        self._broker_down_until = 0.0
        if broker_url:
            self.celery = publisher_app(broker_url)
            # One thread publishes, so a broker that is slow to refuse delays no request.
            self.publisher = WorkerPool("thumbnail-publish", self._publish, queue_size=queue_size)
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None
        self._sweeper_lock = threading.Lock()

    def schedule(self, image_id: str) -> bool:
        """Queue a thumbnail without waiting; False when it must wait for the retry sweep."""
        self.start()
        return self._dispatch(image_id)

    def _dispatch(self, image_id: str) -> bool:
        return _enqueue(self.publisher or self.local, image_id)

    def _publish(self, image_id: str) -> None:
        if time.monotonic() < self._broker_down_until:
            _enqueue(self.local, image_id)
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
            _enqueue(self.local, image_id)

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
        ids = claim_stale(self.store, older_than=self.retry_seconds, max_attempts=self.max_attempts)
        for image_id in ids:
            log.info("retrying the thumbnail of %s", image_id)
            self._dispatch(image_id)
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
