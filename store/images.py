"""The image store: every kept image is one file under IMAGE_DIR plus one database row.

- Files are named by id (`<id[:2]>/<id>.<ext>`), never by a user-supplied name (store.records).
- A write is all or nothing: the bytes go to a temporary name and are fsync'ed, the row is
  inserted, the file is renamed into place, and the transaction commits; any failure removes
  the file and rolls the row back.
- `save()` writes synchronously (uploads); `submit()` hands the write to the background writer
  (store.writer), so a prediction never waits for the database: its image is journalled on disk
  first (store.journal), so an answered request's image is kept even if the process dies next.
  Once a row is committed, its thumbnail is scheduled on the thumbnail runner (store.thumbnails).
- The database is opened at its first use (`ensure_schema`): then the journals of processes that
  died are kept, pending thumbnails resumed and retention started (`on_open`).
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from sqlalchemy import delete, insert, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from store.exif import finite, read_exif
from store.export import export_zip
from store.journal import Entry, Journal
from store.metrics import SAVED, THUMBNAILS
from store.queries import StoreQueries
from store.records import (
    DONE,
    FAILED,
    MAX_NAME_CHARS,
    PENDING,
    THUMB_STATUSES,
    InvalidImageId,
    NewImage,
    StoredImage,
    StoreError,
    as_utc,
    clean_label,
    extension_for,
    mime_for,
    new_id,
    validate_id,
)
from store.schema import images, make_engine, migrate, write_transaction
from store.thumbnails import Thumbnails
from store.writer import Writer

if TYPE_CHECKING:
    from store.retention import Retention

log = logging.getLogger(__name__)


def resolve_image_dir(root: str | os.PathLike, value: str | os.PathLike) -> Path:
    """Resolve IMAGE_DIR against the project root."""
    path = Path(value)
    return path if path.is_absolute() else Path(root) / path


class ImageStore(StoreQueries):
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
    ):
        self.database_url = database_url
        # The endpoints whose images submit() keeps (None: every one); uploads use save().
        self.keep_endpoints = None if keep_endpoints is None else frozenset(keep_endpoints)
        self.engine = make_engine(database_url)
        self.image_dir = Path(image_dir)
        self.thumbnail_size = thumbnail_size
        # Schedules the thumbnail of every committed row once start_thumbnails() has run.
        self.thumbnails: Thumbnails | None = None
        self.journal = Journal(self.image_dir / ".journal")
        self.writer = Writer(self.save_entry, self.journal, queue_size=queue_size, queue_wait=queue_wait)
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

    # writing

    def save(self, new: NewImage, *, image_id: str | None = None, created_at: datetime | None = None) -> str:
        """Write file and row together, or neither; return the id or raise StoreError."""
        image_id = validate_id(image_id) if image_id else new_id()
        self.ensure_schema()
        fmt = str(new.format or "UNKNOWN").upper()[:16]
        relative = self.relative_path(image_id, fmt)
        final = self.image_dir / relative
        now = datetime.now(UTC)
        exif = read_exif(new.data)
        row = {
            "id": image_id,
            "created_at": as_utc(created_at) if created_at else now,
            "endpoint": _short(new.endpoint) or "unknown",
            "model": _short(new.model),
            # A model's text may hold line breaks; only a NUL, which PostgreSQL refuses, goes.
            "prediction": None
            if new.prediction is None
            else str(new.prediction).replace("\x00", "")[:10_000],
            "confidence": fraction(new.confidence),
            "label": clean_label(new.label),
            "labelled_at": now if new.label is not None else None,
            "original_name": (new.original_name or None) and _printable(new.original_name, 255),
            "file_name": relative,
            "byte_size": len(new.data),
            "sha256": hashlib.sha256(new.data).hexdigest(),
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
        temp = None
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            temp = self.journal.temp_path(image_id)  # this process's folder: swept if it dies
            self._write_file(temp, new.data)
        except OSError as exc:
            _unlink(temp)
            raise StoreError("disk", f"cannot write image file: {exc}") from exc
        try:
            with write_transaction(self.engine) as conn:
                # Parameters apart from the statement: SQLAlchemy compiles it once and reuses it.
                conn.execute(insert(images), row)
                os.replace(temp, final)  # inside the transaction: a failed commit removes it
        except OSError as exc:
            _unlink(temp)
            raise StoreError("disk", f"cannot move image file into place: {exc}") from exc
        except SQLAlchemyError as exc:
            _unlink(temp)
            _unlink(final)
            raise StoreError("database", f"cannot record image: {exc}") from exc
        except BaseException:
            _unlink(temp)
            _unlink(final)
            raise
        SAVED.labels(row["endpoint"]).inc()
        if self.thumbnails is not None:
            try:
                self.thumbnails.schedule(image_id)
            except Exception:  # the image is kept; the retry sweep makes the thumbnail later
                log.exception("could not schedule the thumbnail of %s", image_id)
        return image_id

    def save_entry(self, entry: Entry) -> str:
        """Save a journalled image under its id and time; return the id or raise StoreError."""
        new = NewImage(
            data=entry.encoded(),
            format=entry.format,
            width=entry.width,
            height=entry.height,
            endpoint=entry.endpoint,
            model=entry.model,
            prediction=entry.prediction,
            confidence=entry.confidence,
        )
        return self.save(new, image_id=entry.image_id, created_at=datetime.fromtimestamp(entry.created, UTC))

    @staticmethod
    def _write_file(path: Path, data: bytes) -> None:
        """Write bytes to a new file and flush them to disk."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)

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
        _unlink(self.file_path(record))
        _unlink(self.thumbnail_path(image_id))
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


def fraction(confidence: float | None) -> float | None:
    """Return a confidence as kept: a fraction from 0 to 1 (a percentage is a caller's bug)."""
    value = finite(confidence) if confidence is not None else None
    if value is not None and not 0.0 <= value <= 1.0:
        raise ValueError(f"confidence must be a fraction from 0 to 1, got {value!r}")
    return value


def _printable(value: Any, limit: int) -> str | None:
    # Text from a client or a model, without control characters (PostgreSQL refuses a NUL), cut.
    return "".join(c for c in str(value) if c.isprintable() or c == " ")[:limit] or None


def _short(value: Any) -> str | None:
    # Names that code passes (endpoint, model) are kept, cut to the column's size.
    if value is None:
        return None
    value = "".join(c for c in str(value).strip() if c.isprintable())
    return value[:MAX_NAME_CHARS] or None


def _unlink(path: Path | None) -> None:
    if path is None:
        return
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("could not remove %s: %s", path, exc)
