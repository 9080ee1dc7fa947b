"""Writing: an image's file and row together or neither, one at a time or many with one commit.

Mixed into ImageStore (store.images), whose layout (paths), journal, engine and thumbnails it uses.

- A write is all or nothing: the bytes go to a temporary name in the process's journal folder
  (swept if it dies), are flushed to disk (store.durable: one syncfs for a batch), the rows are
  inserted, the files renamed into place inside the transaction, then it commits; any failure
  removes the files and rolls the rows back.
- `save_entries` is the background writer's group commit: what is queued when it wakes up is
  kept with one transaction (one commit instead of one per image: 0.3 ms of CPU each on SQLite
  here), and the thumbnail of a canvas is made from its request's pixels on the way (store.render:
  0.1-0.2 ms instead of 1.7-3.7 ms to decode, shrink, encode and record it later).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
from sqlalchemy import insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from store.durable import BATCH, sync_files
from store.exif import read_exif
from store.journal import Entry, Journal
from store.metrics import SAVED, THUMBNAILS
from store.records import DONE, NewImage, StoreError, new_id, new_row, validate_id
from store.render import Decoded, serves_itself, thumbnail_jpeg
from store.schema import images, write_transaction

if TYPE_CHECKING:
    from store.thumbnails import Thumbnails

log = logging.getLogger(__name__)


@dataclass
class _Staged:
    """An image written under a temporary name (and maybe its thumbnail), its row not inserted yet."""

    image_id: str
    row: dict[str, Any]
    temp: Path
    final: Path
    fd: int | None = None  # open until flushed to disk (_sync)
    thumb_temp: Path | None = None
    thumb_final: Path | None = None
    placed: bool = False

    def place(self) -> None:
        """Move the file (and thumbnail) into place."""
        _move(self.temp, self.final)
        self.placed = True
        if self.thumb_temp is not None:
            _move(self.thumb_temp, self.thumb_final)

    def discard(self) -> None:
        """Remove what was written: temporaries, and the files placed by this write only."""
        if self.fd is not None:
            fd, self.fd = self.fd, None
            with contextlib.suppress(OSError):
                os.close(fd)
        remove_file(self.temp)
        remove_file(self.thumb_temp)
        if self.placed:
            remove_file(self.final)
            remove_file(self.thumb_final)
            self.placed = False


class StoreWrites:
    """Saving images: `save` (an upload, synchronous), `save_entry` and `save_entries` (the writer's)."""

    engine: Engine
    image_dir: Path
    journal: Journal
    thumbnails: Thumbnails | None
    thumbnail_size: int
    # How files are flushed before their rows commit (store.durable: "batch" or "file").
    sync_mode: str = BATCH

    def ensure_schema(self) -> None:  # pragma: no cover - ImageStore's
        raise NotImplementedError

    def relative_path(self, image_id: str, fmt: str) -> str:  # pragma: no cover - ImageStore's
        raise NotImplementedError

    def thumbnail_path(self, image_id: str) -> Path:  # pragma: no cover - ImageStore's
        raise NotImplementedError

    def save(self, new: NewImage, *, image_id: str | None = None, created_at: datetime | None = None) -> str:
        """Write file and row together, or neither; return the id or raise StoreError."""
        staged = self._stage(new, image_id=image_id, created_at=created_at)
        self._commit([staged])
        self._kept([staged])
        return staged.image_id

    def save_entry(self, entry: Entry, decoded: Decoded | None = None) -> str:
        """Save a journalled image under its id and time; return the id or raise StoreError."""
        staged = self._stage(
            _new_image(entry), image_id=entry.image_id, created_at=_created(entry), decoded=decoded
        )
        self._commit([staged])
        self._kept([staged])
        return staged.image_id

    def save_entries(self, items: list[tuple[Entry, Decoded | None]]) -> list[str | Exception]:
        """Keep journalled images with one commit (and one fsync each); per image its id or its error.

        Given an image's decoded pixels (and with thumbnails on), its thumbnail is made now and
        its row inserted done (store.render). When the one transaction fails, each image is tried
        alone, so that one bad image does not keep the others out.
        """
        results: list[str | Exception | None] = [None] * len(items)
        staged: list[tuple[int, _Staged]] = []
        for n, (entry, decoded) in enumerate(items):
            try:
                staged.append(
                    (
                        n,
                        self._stage(
                            _new_image(entry),
                            image_id=entry.image_id,
                            created_at=_created(entry),
                            decoded=decoded,
                        ),
                    )
                )
            except Exception as exc:  # the writer counts and logs it, by kind
                results[n] = exc
        if len(staged) > 1:
            try:
                self._commit([s for _, s in staged])
            except StoreError as exc:
                log.warning("%d images could not be kept together (%s); trying each alone", len(staged), exc)
                for n, _ in staged:
                    results[n] = self._save_alone(*items[n])
            else:
                self._kept([s for _, s in staged])
                for n, s in staged:
                    results[n] = s.image_id
        elif staged:
            n, one = staged[0]
            try:
                self._commit([one])
            except Exception as exc:
                results[n] = exc
            else:
                self._kept([one])
                results[n] = one.image_id
        return results  # type: ignore[return-value]

    def _save_alone(self, entry: Entry, decoded: Decoded | None) -> str | Exception:
        try:
            return self.save_entry(entry, decoded)
        except Exception as exc:
            return exc

    def _stage(
        self,
        new: NewImage,
        *,
        image_id: str | None,
        created_at: datetime | None,
        decoded: Decoded | None = None,
    ) -> _Staged:
        """Write an image's file (not synced yet) and its thumbnail when it can be made now."""
        image_id = validate_id(image_id) if image_id else new_id()
        self.ensure_schema()
        fmt = str(new.format or "UNKNOWN").upper()[:16]
        relative = self.relative_path(image_id, fmt)
        row = new_row(
            new,
            image_id=image_id,
            file_name=relative,
            fmt=fmt,
            sha256=hashlib.sha256(new.data).hexdigest(),
            exif=read_exif(new.data),
            created_at=created_at,
            now=datetime.now(UTC),
        )
        staged = _Staged(image_id, row, self.journal.temp_path(image_id), self.image_dir / relative)
        try:
            staged.fd = self._write_file(staged.temp, new.data)  # in this process's folder: swept if it dies
        except OSError as exc:
            staged.discard()
            raise StoreError("disk", f"cannot write image file: {exc}") from exc
        # Not decoded yet (an upload, a journalled image): the thumbnail runner decides.
        if decoded is not None:
            if serves_itself(new.data, fmt, new.width, new.height, self.thumbnail_size):
                staged.row["thumb_status"] = DONE  # no file to make: /vignette serves the original
            elif self.thumbnails is not None:
                self._stage_thumbnail(staged, decoded)
        return staged

    def _stage_thumbnail(self, staged: _Staged, decoded: Decoded) -> None:
        """Write the thumbnail from the request's pixels; left pending (made later) when that fails."""
        image_id = staged.image_id
        try:
            jpeg = thumbnail_jpeg(decoded.pixels, decoded.order, self.thumbnail_size)
            staged.thumb_final = self.thumbnail_path(image_id)
            staged.thumb_temp = self.journal.temp_path(image_id)
            # Not fsync'ed, as in store.thumbnails: a thumbnail can always be made again.
            staged.thumb_temp.write_bytes(jpeg)
        except (OSError, ValueError, cv2.error) as exc:
            log.warning("thumbnail of %s left to the background runner: %s", image_id, exc)
            remove_file(staged.thumb_temp)
            staged.thumb_temp = staged.thumb_final = None
            return
        staged.row["thumb_status"] = DONE

    def _commit(self, batch: list[_Staged]) -> None:
        """Flush the files to disk, insert the rows and move the files into place, in one transaction.

        Any failure removes what was written and rolls every row back (StoreError).
        """
        try:
            _sync(batch, self.sync_mode)
            with write_transaction(self.engine) as conn:
                # Parameters apart from the statement: SQLAlchemy compiles it once (executemany).
                conn.execute(insert(images), [staged.row for staged in batch])
                for staged in batch:
                    staged.place()  # inside the transaction: a failed commit removes them
        except OSError as exc:
            _discard(batch)
            raise StoreError("disk", f"cannot write or move image file into place: {exc}") from exc
        except SQLAlchemyError as exc:
            _discard(batch)
            raise StoreError("database", f"cannot record image: {exc}") from exc
        except BaseException:
            _discard(batch)
            raise

    def _kept(self, batch: list[_Staged]) -> None:
        """Count committed images and schedule the thumbnails not made yet."""
        # Counted once per endpoint and batch: labels() validates and locks on every call.
        for endpoint, count in Counter(staged.row["endpoint"] for staged in batch).items():
            SAVED.labels(endpoint).inc(count)
        done = sum(staged.row["thumb_status"] == DONE for staged in batch)
        if done:
            THUMBNAILS.labels(DONE).inc(done)
        if self.thumbnails is None:
            return
        for staged in batch:
            if staged.row["thumb_status"] != DONE:
                try:
                    self.thumbnails.schedule(staged.image_id)
                except Exception:  # the image is kept; the retry sweep makes the thumbnail later
                    log.exception("could not schedule the thumbnail of %s", staged.image_id)

    @staticmethod
    def _write_file(path: Path, data: bytes) -> int:
        """Write bytes to a new file; return its descriptor, still open to be flushed (_sync)."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
        except BaseException:
            os.close(fd)
            raise
        return fd


def _new_image(entry: Entry) -> NewImage:
    return NewImage(
        data=entry.encoded(),
        format=entry.format,
        width=entry.width,
        height=entry.height,
        endpoint=entry.endpoint,
        model=entry.model,
        prediction=entry.prediction,
        confidence=entry.confidence,
    )


def _created(entry: Entry) -> datetime:
    return datetime.fromtimestamp(entry.created, UTC)


def _move(source: Path, target: Path) -> None:
    """Rename a file into its folder, made when missing (asked only then: one system call saved)."""
    try:
        os.replace(source, target)
    except FileNotFoundError:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)


def _sync(batch: list[_Staged], mode: str) -> None:
    """Flush the batch's new files to disk, then close them."""
    try:
        sync_files([staged.fd for staged in batch if staged.fd is not None], mode)
    finally:
        for staged in batch:
            if staged.fd is not None:
                fd, staged.fd = staged.fd, None
                os.close(fd)


def _discard(batch: list[_Staged]) -> None:
    for staged in batch:
        staged.discard()


def remove_file(path: Path | None) -> None:
    """Remove a file if it is there; a failure is logged, never raised."""
    if path is None:
        return
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("could not remove %s: %s", path, exc)
