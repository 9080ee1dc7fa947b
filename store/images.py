"""The image store: every kept image is one file under IMAGE_DIR plus one database row.

- Files are named by id (`<id[:2]>/<id>.<ext>`), never by a user-supplied name (store.records).
- A write is all or nothing (store.saving): the bytes go to a temporary name and are fsync'ed,
  the row is inserted, the file is renamed into place, and the transaction commits; any failure
  removes the file and rolls the row back.
- `save()` writes synchronously (uploads); `submit()` hands the write to the background writer
  (store.writer), so a prediction never waits for the database: its image is journalled on disk
  first (store.journal), so an answered request's image is kept even if the process dies next.
  The writer keeps what is queued with one commit, and makes a canvas's thumbnail from its
  request's pixels on the way (store.render); any other thumbnail is scheduled on the thumbnail
  runner once its row is committed (store.thumbnails).
- The database is opened at its first use (`ensure_schema`): then the journals of processes that
  died are kept, pending thumbnails resumed and retention started (`on_open`).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from sqlalchemy import delete, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from store.durable import BATCH, check_mode
from store.export import export_zip
from store.journal import Entry, Journal
from store.metrics import THUMBNAILS
from store.queries import StoreQueries
from store.records import (
    DONE,
    FAILED,
    THUMB_STATUSES,
    InvalidImageId,
    StoredImage,
    StoreError,
    clean_label,
    extension_for,
    validate_id,
)
from store.saving import StoreWrites, remove_file
from store.schema import images, make_engine, migrate, write_transaction
from store.thumbnails import Thumbnails, own_original
from store.writer import Writer

if TYPE_CHECKING:
    from store.retention import Retention

log = logging.getLogger(__name__)


def resolve_image_dir(root: str | os.PathLike, value: str | os.PathLike) -> Path:
    """Resolve IMAGE_DIR against the project root."""
    path = Path(value)
    return path if path.is_absolute() else Path(root) / path


class ImageStore(StoreWrites, StoreQueries):
    """Files under `image_dir` plus rows in `database_url`; thread-safe."""

    def __init__(
        self,
        database_url: str,
        image_dir: str | os.PathLike,
        *,
        thumbnail_size: int = 128,
        queue_size: int = 256,
        queue_wait: float = 2.0,
        keep_endpoints: Iterable[str] | None = None,
        sync_mode: str = BATCH,
    ):
        self.database_url = database_url
        # The endpoints whose images submit() keeps (None: every one); uploads use save().
        self.keep_endpoints = None if keep_endpoints is None else frozenset(keep_endpoints)
        self.engine = make_engine(database_url)
        self.image_dir = Path(image_dir)
        self.thumbnail_size = thumbnail_size
        self.sync_mode = check_mode(sync_mode)
        # Schedules the thumbnail of every committed row once start_thumbnails() has run.
        self.thumbnails: Thumbnails | None = None
        self.journal = Journal(self.image_dir / ".journal")
        self.writer = Writer(
            self.save_entries,
            self.journal,
            queue_size=queue_size,
            queue_wait=queue_wait,
            thumbnail_size=thumbnail_size,
        )
        # Started when the database is first opened (store.retention), when init_app sets it.
        self.retention: Retention | None = None
        self._schema_ok = False
        self._schema_lock = threading.Lock()
        self._opened = threading.Event()
        self._exit_registered = False
        self._closed = False

    def __repr__(self) -> str:
        return f"ImageStore({make_url(self.database_url)!r}, {str(self.image_dir)!r})"

    # schema

    def ensure_schema(self) -> None:
        """Migrate the database once per store; retried on the next use after a failure."""
        if self._schema_ok:
            return
        with self._schema_lock:
            if self._schema_ok:
                return
            try:
                migrate(self.engine)
            except SQLAlchemyError as exc:
                raise StoreError("database", f"cannot prepare the image database: {exc}") from exc
            self._schema_ok = True
        self.on_open()

    def on_open(self) -> None:
        """Once the database answers: keep what dead processes journalled, resume thumbnails, retention."""
        with self._schema_lock:
            if self._opened.is_set():
                return
            self._opened.set()
        try:
            self.journal.recover(self._keep_entry)
        except (StoreError, SQLAlchemyError, OSError) as exc:
            log.error("journalled images of ended processes not kept yet (next start tries again): %s", exc)
        self._resume_thumbnails()
        if self.retention is not None:
            self.retention.start()

    def _resume_thumbnails(self) -> None:
        """Start the thumbnail sweeper now when thumbnails wait from an earlier run."""
        if self.thumbnails is None:
            return
        try:
            pending = self.pending_count()
        except (StoreError, SQLAlchemyError) as exc:
            log.warning("cannot count pending thumbnails yet: %s", exc)
            pending = 1  # unknown: let the sweeper look once the database answers
        if pending:
            self.thumbnails.start()

    def _keep_entry(self, entry: Entry) -> bool:
        """Keep a journalled image; False when its row is already there (the writer got that far)."""
        if self.get(entry.image_id, exif=False) is not None:
            return False
        self.save_entry(entry)
        return True

    # paths

    def relative_path(self, image_id: str, fmt: str) -> str:
        """Return the stored file's path relative to the store: `<id[:2]>/<id>.<ext>`."""
        validate_id(image_id)
        return f"{image_id[:2]}/{image_id}.{extension_for(fmt)}"

    def file_path(self, record: StoredImage) -> Path:
        """Return the absolute path of a record's original file."""
        validate_id(record.id)
        return self.image_dir / record.file_name

    def thumbnail_path(self, image_id: str) -> Path:
        """Return where an image's thumbnail (JPEG) lives."""
        validate_id(image_id)
        return self.image_dir / "thumbs" / image_id[:2] / f"{image_id}.jpg"

    def own_thumbnail(self, record: StoredImage) -> Path | None:
        """Return the original's path when it is served as its own thumbnail (store.render), else None."""
        path = self.file_path(record)
        try:
            return path if own_original(path, record, self.thumbnail_size) is not None else None
        except OSError:
            return None

    # writing

    def submit(
        self,
        image: Any,
        *,
        endpoint: str,
        model: str | None,
        prediction: Any,
        confidence: float | None,
    ) -> str | None:
        """Queue an InputImage for a background write; return its future id, None when not kept."""
        if self.keep_endpoints is not None and endpoint not in self.keep_endpoints:
            return None
        if self._closed:
            return None
        if not self._exit_registered:
            # Queued writes are finished when the interpreter exits (the writer thread is a daemon).
            self._exit_registered = True
            atexit.register(self.close)
        return self.writer.submit(
            image, endpoint=endpoint, model=model, prediction=prediction, confidence=confidence
        )

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued write is done; True when the queue drained in time."""
        return self.writer.flush(timeout)

    @property
    def queued(self) -> int:
        """Return how many writes wait in the queue."""
        return self.writer.queued

    def start_thumbnails(self, **options: Any) -> Thumbnails:
        """Make the thumbnail of every saved image in the background (Thumbnails' options).

        The retry sweeper starts with the first thumbnail, or when the database is opened
        (on_open) with thumbnails already pending.
        """
        self.thumbnails = Thumbnails(self, **options)
        if self._opened.is_set():
            self._resume_thumbnails()
        return self.thumbnails

    def close(self, timeout: float = 10.0) -> None:
        """Finish queued writes, stop the writer and the thumbnail runner, release connections."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        self.writer.close(timeout)
        if self.retention is not None:
            self.retention.close()
        if self.thumbnails is not None:
            self.thumbnails.close()
        self.journal.close()
        self.engine.dispose()

    # changing

    def set_label(self, image_id: str, label: Any) -> StoredImage | None:
        """Record (or clear, with None) the correct answer for an image; None when unknown."""
        label = clean_label(label)
        try:
            validate_id(image_id)
        except InvalidImageId:
            return None
        self.ensure_schema()
        now = datetime.now(UTC) if label is not None else None
        with write_transaction(self.engine) as conn:
            result = conn.execute(
                update(images).where(images.c.id == image_id).values(label=label, labelled_at=now)
            )
        return self.get(image_id) if result.rowcount else None

    def delete(self, image_id: str) -> bool:
        """Delete a record, its file and its thumbnail; False when there was none."""
        record = self.get(image_id, exif=False)
        if record is None:
            return False
        with write_transaction(self.engine) as conn:
            result = conn.execute(delete(images).where(images.c.id == image_id))
        # The row goes first: a file whose row is gone is invisible, a row without its file is not.
        remove_file(self.file_path(record))
        remove_file(self.thumbnail_path(image_id))
        return bool(result.rowcount)

    def mark_thumbnail(self, image_id: str, status: str, error: str | None = None) -> None:
        """Record a thumbnail's outcome."""
        if status not in THUMB_STATUSES:
            raise ValueError(f"thumbnail status must be one of {THUMB_STATUSES}")
        validate_id(image_id)
        self.ensure_schema()
        with write_transaction(self.engine) as conn:
            conn.execute(
                update(images)
                .where(images.c.id == image_id)
                .values(
                    thumb_status=status,
                    thumb_error=None if error is None else error[:500],
                    thumb_updated_at=datetime.now(UTC),
                )
            )
        if status in (DONE, FAILED):
            THUMBNAILS.labels(status).inc()

    # export

    def export_zip(self, out: IO[bytes], *, model: str | None = None) -> int:
        """Write the labelled images (of one model, or all) as a zip; return how many (store.export)."""
        return export_zip(self, out, model=model)
