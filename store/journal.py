"""The journal: an image handed to the background writer is on disk before its request is answered.

Each process that writes to the store owns a folder `IMAGE_DIR/.journal/<owner>/` while it lives,
holding an exclusive lock on its `lock` file. The folder holds

- `<n>.log`: append-only segments of records, one per queued image (a JSON header and its bytes),
  appended with one write() by the request (a few microseconds: no new file, no fsync); a
  segment is deleted once every image in it is kept, and a new one begun past SEGMENT_BYTES;
- `.tmp-*`: every file the process is writing (originals, thumbnails), renamed into place when
  whole, so that a process that dies leaves its half-written files here and nowhere else.

The kernel drops the lock when its process dies, however it dies (`kill -9` included), and the
appended records outlive it (they are in the page cache, not fsync'ed: a power cut can lose the
last seconds; a kept file is fsync'ed). At start, `recover()` takes the lock of every folder
whose owner is gone, keeps each image recorded there whose row is not in the database yet
(dropped ones are marked by a later record), and deletes the folder with its temporaries.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import secrets
import shutil
import struct
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows (the waitress service)
    fcntl = None  # type: ignore[assignment]
    import msvcrt

from store.metrics import DROPPED, RECOVERED
from store.records import StoreError

log = logging.getLogger(__name__)

LOCK = "lock"
SEGMENT_BYTES = 8 * 1024 * 1024
# The current segment is emptied when everything in it is kept and it is past this size.
EMPTY_BYTES = 256 * 1024
# A record: magic, header length, payload length (little-endian), the JSON header, the payload.
_PREFIX = struct.Struct("<4sII")
_MAGIC = b"VJ01"
# A folder without a lock file is being created, or was left by a process that died creating it.
YOUNG_SECONDS = 60.0


@dataclass(frozen=True)
class Entry:
    """One journalled image: what the writer needs to keep it."""

    image_id: str
    created: float
    endpoint: str
    model: str | None
    prediction: str | None
    confidence: float | None
    format: str
    width: int
    height: int
    data: bytes | None  # the image as received, or None for a legacy pixel array
    pixels: np.ndarray | None = None
    order: str = "BGR"

    def encoded(self) -> bytes:
        """Return the bytes to keep: as received, or a legacy array as PNG."""
        if self.data is not None:
            return self.data
        from models.image import InputImage

        return InputImage(pixels=self.pixels, format="ARRAY", source="journal", order=self.order).encoded()


@dataclass(frozen=True)
class Ticket:
    """Where a record is: its segment, offset and length."""

    segment: int
    offset: int
    length: int


def encode(entry: Entry) -> bytes:
    """Return an entry as one record."""
    header: dict[str, Any] = {
        "id": entry.image_id,
        "created": entry.created,
        "endpoint": entry.endpoint,
        "model": entry.model,
        "prediction": entry.prediction,
        "confidence": entry.confidence,
        "format": entry.format,
        "width": entry.width,
        "height": entry.height,
    }
    if entry.data is None:
        pixels = np.ascontiguousarray(entry.pixels)
        header.update(shape=list(pixels.shape), order=entry.order)
        payload = pixels.tobytes()
    else:
        payload = entry.data
    head = json.dumps(header).encode("utf-8")
    return _PREFIX.pack(_MAGIC, len(head), len(payload)) + head + payload


def decode(record: bytes) -> Entry | str:
    """Return a record's entry, or the id of a drop mark (ValueError when it is not a record)."""
    magic, head_length, payload_length = _PREFIX.unpack_from(record)
    if magic != _MAGIC:
        raise ValueError("not a journal record")
    start = _PREFIX.size
    header = json.loads(record[start : start + head_length])
    if "dropped" in header:
        return str(header["dropped"])
    payload = record[start + head_length : start + head_length + payload_length]
    pixels = None
    data: bytes | None = payload
    if "shape" in header:
        pixels = np.frombuffer(payload, np.uint8).reshape(header["shape"])
        data = None
    return Entry(
        image_id=str(header["id"]),
        created=float(header["created"]),
        endpoint=str(header["endpoint"]),
        model=header.get("model"),
        prediction=header.get("prediction"),
        confidence=header.get("confidence"),
        format=str(header["format"]),
        width=int(header["width"]),
        height=int(header["height"]),
        data=data,
        pixels=pixels,
        order=header.get("order", "BGR"),
    )


def records(data: bytes) -> Iterator[bytes]:
    """Yield the whole records of a segment; a record cut short (its process died writing it) ends it."""
    offset = 0
    while offset + _PREFIX.size <= len(data):
        magic, head_length, payload_length = _PREFIX.unpack_from(data, offset)
        end = offset + _PREFIX.size + head_length + payload_length
        if magic != _MAGIC or end > len(data):
            return
        yield data[offset:end]
        offset = end


def _entries(segment: Path, *, quiet: bool = False) -> Iterator[Entry | str]:
    """Yield a segment's entries and drop marks; an unreadable record is counted (unless quiet) and skipped."""
    for record in records(segment.read_bytes()):
        try:
            yield decode(record)
        except (ValueError, KeyError, TypeError) as exc:
            if quiet:
                continue
            DROPPED.labels("journal_unreadable").inc()
            log.error("a journal record in %s is unreadable, not kept: %s", segment, exc)


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    fds.clear()


def _lock(fd: int) -> bool:
    """Take an exclusive lock on an open file without waiting; False when another process holds it."""
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:  # pragma: no cover - Windows
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError:
        return False
    return True


class Journal:
    """This process's journal folder (made on first use) and the recovery of dead processes' folders."""

    def __init__(self, root: str | os.PathLike, *, segment_bytes: int = SEGMENT_BYTES):
        self.root = Path(root)
        self.owner = f"{os.getpid()}-{secrets.token_hex(4)}"
        self.folder = self.root / self.owner
        self.segment_bytes = segment_bytes
        self._lock_fd: int | None = None
        self._lock = threading.Lock()
        self._temp_numbers = itertools.count()
        self._segment = 0  # the segment records are appended to (0: none yet)
        self._fd: int | None = None
        self._size = 0
        self._pending: dict[int, int] = {}  # segment -> records not resolved yet
        # The open descriptors, closed when the journal is collected without close() (a test's store).
        self._fds: list[int] = []
        weakref.finalize(self, _close_all, self._fds)

    def _ready(self) -> Path:
        """Create and lock this process's folder once; return it (call under self._lock)."""
        if self._lock_fd is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
            if not _lock(fd):  # pragma: no cover - the owner name is this process's own
                os.close(fd)
                raise OSError(f"journal folder {self.folder} is locked by another process")
            self._lock_fd = fd
            self._fds.append(fd)
        return self.folder

    def temp_path(self, hint: str = "") -> Path:
        """Return a fresh temporary name in this process's folder (same file system as the store)."""
        with self._lock:
            folder = self._ready()
            number = next(self._temp_numbers)  # the folder is this process's alone: a count is unique
        return folder / f".tmp-{hint}-{number}"

    def _segment_path(self, segment: int) -> Path:
        return self.folder / f"{segment:06d}.log"

    def append(self, entry: Entry) -> Ticket:
        """Append an entry's record with one write(); return where it is."""
        return self._append(encode(entry), pending=True)

    def drop(self, image_id: str) -> None:
        """Record that an image will not be kept (recovery then leaves it out)."""
        head = json.dumps({"dropped": image_id}).encode("utf-8")
        self._append(_PREFIX.pack(_MAGIC, len(head), 0) + head, pending=False)

    def _append(self, record: bytes, *, pending: bool) -> Ticket:
        with self._lock:
            self._ready()
            if self._fd is None or self._size > self.segment_bytes:
                self._rotate()
            offset = self._size
            try:
                written = os.write(self._fd, record)
            except OSError:
                os.ftruncate(self._fd, offset)  # no half record for the next one to follow
                raise
            if written != len(record):
                os.ftruncate(self._fd, offset)
                raise OSError(f"journal write cut short ({written} of {len(record)} bytes)")
            self._size += written
            if pending:
                self._pending[self._segment] = self._pending.get(self._segment, 0) + 1
            return Ticket(self._segment, offset, len(record))

    def _rotate(self) -> None:
        """Begin a new segment; delete the old one when nothing in it waits (under self._lock)."""
        old = self._segment
        if self._fd is not None:
            self._fds.remove(self._fd)
            os.close(self._fd)
        self._segment += 1
        self._fd = os.open(self._segment_path(self._segment), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._fds.append(self._fd)
        self._size = 0
        self._pending.setdefault(self._segment, 0)
        if old and not self._pending.get(old):
            self._pending.pop(old, None)
            self._segment_path(old).unlink(missing_ok=True)

    def done(self, ticket: Ticket) -> None:
        """Mark a record resolved (kept, or given up); a finished segment is deleted, or emptied."""
        with self._lock:
            left = self._pending.get(ticket.segment, 0) - 1
            self._pending[ticket.segment] = max(left, 0)
            if left <= 0 and ticket.segment == self._segment and self._size > EMPTY_BYTES:
                # Everything in it is kept: start it again, so a restart has little to look through.
                os.ftruncate(self._fd, 0)
                self._size = 0
            elif left <= 0 and ticket.segment != self._segment:
                self._pending.pop(ticket.segment, None)
                try:
                    self._segment_path(ticket.segment).unlink(missing_ok=True)
                except OSError as exc:
                    log.warning("could not remove journal segment %s: %s", ticket.segment, exc)

    def read(self, ticket: Ticket) -> Entry:
        """Read a record of this process back (a failed save, tried again)."""
        with open(self._segment_path(ticket.segment), "rb") as fh:
            fh.seek(ticket.offset)
            entry = decode(fh.read(ticket.length))
        if not isinstance(entry, Entry):
            raise ValueError("a drop mark, not an image")
        return entry

    @property
    def pending(self) -> int:
        """Return how many records of this process wait to be kept."""
        with self._lock:
            return sum(self._pending.values())

    def recover(self, keep: Callable[[Entry], bool]) -> int:
        """Keep what every ended process journalled, then delete its folder; return how many were kept."""
        if not self.root.is_dir():
            return 0
        kept = 0
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir() and p.name != self.owner):
            kept += self._recover_folder(folder, keep)
        return kept

    def _recover_folder(self, folder: Path, keep: Callable[[Entry], bool]) -> int:
        try:
            fd = os.open(folder / LOCK, os.O_RDWR)
        except FileNotFoundError:
            try:
                young = time.time() - folder.stat().st_mtime < YOUNG_SECONDS
            except FileNotFoundError:
                return 0
            if not young:  # else its owner may be creating it right now
                shutil.rmtree(folder, ignore_errors=True)
            return 0
        except OSError as exc:
            log.warning("cannot open the journal lock of %s: %s", folder, exc)
            return 0
        kept = 0
        try:
            if not _lock(fd):
                return 0  # its owner is alive
            segments = sorted(folder.glob("*.log"))
            dropped = {e for s in segments for e in _entries(s, quiet=True) if isinstance(e, str)}
            for segment in segments:  # one segment in memory at a time
                for entry in _entries(segment):
                    if isinstance(entry, str) or entry.image_id in dropped:
                        continue
                    try:
                        kept += keep(entry)  # False: its row is there already (the writer got that far)
                    except StoreError:
                        raise  # the database or the disk is down: the folder stays for the next start
                    except Exception as exc:
                        DROPPED.labels("journal_unreadable").inc()
                        log.error("journalled image %s cannot be kept: %s", entry.image_id, exc)
            shutil.rmtree(folder, ignore_errors=True)
        finally:
            os.close(fd)
        if kept:
            RECOVERED.inc(kept)
            log.warning("kept %d images journalled by process %s, which ended first", kept, folder.name)
        return kept

    def close(self) -> None:
        """Release this process's folder: deleted when nothing waits in it, else kept for the next start."""
        with self._lock:
            if self._fd is not None:
                self._fds.remove(self._fd)
                os.close(self._fd)
                self._fd = None
            if self._lock_fd is None:
                return
            if not any(self._pending.values()):
                shutil.rmtree(self.folder, ignore_errors=True)
            self._fds.remove(self._lock_fd)
            os.close(self._lock_fd)
            self._lock_fd = None
