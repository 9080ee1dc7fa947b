"""The journal: an image handed to the background writer is on disk before its request is answered.

Each process that writes to the store owns a folder `IMAGE_DIR/.journal/<owner>/` while it lives,
holding an exclusive lock on its `lock` file. The folder holds

- `<id>.entry`: one queued image (a JSON header line, then its bytes), written under a temporary
  name and renamed into place in the request, removed once the writer has kept it;
- `.tmp-*`: every file the process is writing (entries, originals, thumbnails), renamed into
  place when whole, so a process that dies leaves its half-written files here and nowhere else.

The kernel drops the lock when its process dies, however it dies (`kill -9` included). At start,
`recover()` takes the lock of every folder whose owner is gone, keeps its entries through the
store (an entry whose row is already there is only removed) and deletes the folder with its
temporaries. Entries are not fsync'ed: they outlive the process, not a power cut (a kept file is).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable
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
ENTRY = ".entry"
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

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.owner = f"{os.getpid()}-{secrets.token_hex(4)}"
        self.folder = self.root / self.owner
        self._fd: int | None = None
        self._lock = threading.Lock()

    def _ready(self) -> Path:
        """Create and lock this process's folder once; return it."""
        if self._fd is not None:
            return self.folder
        with self._lock:
            if self._fd is None:
                self.folder.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
                if not _lock(fd):  # pragma: no cover - the owner name is this process's own
                    os.close(fd)
                    raise OSError(f"journal folder {self.folder} is locked by another process")
                self._fd = fd
        return self.folder

    def temp_path(self, hint: str = "") -> Path:
        """Return a fresh temporary name in this process's folder (same file system as the store)."""
        return self._ready() / f".tmp-{hint}-{secrets.token_hex(6)}"

    def write(self, entry: Entry) -> Path:
        """Write an entry whole under its final name (rename of a temporary); return its path."""
        header = {
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
            payload: Any = memoryview(pixels).cast("B")
        else:
            payload = entry.data
        target = self._ready() / f"{entry.image_id}{ENTRY}"
        temp = self.temp_path(entry.image_id)
        try:
            with open(temp, "xb") as fh:
                fh.write(json.dumps(header).encode("utf-8") + b"\n")
                fh.write(payload)
            os.replace(temp, target)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return target

    @staticmethod
    def read(path: Path) -> Entry:
        """Read an entry back (ValueError when it is not one)."""
        raw = path.read_bytes()
        line, _, payload = raw.partition(b"\n")
        header = json.loads(line)
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

    @staticmethod
    def remove(path: Path) -> None:
        """Remove an entry the store has kept."""
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("could not remove journal entry %s: %s", path, exc)

    def entries(self) -> list[Path]:
        """Return this process's entries still on disk (kept by nobody yet)."""
        return sorted(self.folder.glob(f"*{ENTRY}")) if self.folder.is_dir() else []

    def recover(self, keep: Callable[[Entry], None]) -> int:
        """Keep the entries of every folder whose owner is gone, then delete those folders; return how many."""
        if not self.root.is_dir():
            return 0
        kept = 0
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir() and p.name != self.owner):
            kept += self._recover_folder(folder, keep)
        return kept

    def _recover_folder(self, folder: Path, keep: Callable[[Entry], None]) -> int:
        try:
            fd = os.open(folder / LOCK, os.O_RDWR)
        except FileNotFoundError:
            try:
                young = time.time() - folder.stat().st_mtime < YOUNG_SECONDS
            except FileNotFoundError:
                return 0
            if young:
                return 0  # its owner may be creating it right now
            shutil.rmtree(folder, ignore_errors=True)
            return 0
        except OSError as exc:
            log.warning("cannot open the journal lock of %s: %s", folder, exc)
            return 0
        kept = 0
        try:
            if not _lock(fd):
                return 0  # its owner is alive
            for path in sorted(folder.glob(f"*{ENTRY}")):
                try:
                    entry = self.read(path)
                except (OSError, ValueError, KeyError, TypeError) as exc:
                    DROPPED.labels("journal_unreadable").inc()
                    log.error("journal entry %s is unreadable, not kept: %s", path, exc)
                    self.remove(path)
                    continue
                try:
                    keep(entry)
                except StoreError:
                    raise  # the database or the disk is down: the folder stays for the next start
                except Exception as exc:
                    DROPPED.labels("journal_unreadable").inc()
                    log.error("journal entry %s cannot be kept: %s", path, exc)
                else:
                    kept += 1
                self.remove(path)
            shutil.rmtree(folder, ignore_errors=True)
        finally:
            os.close(fd)
        if kept:
            RECOVERED.inc(kept)
            log.warning("kept %d images journalled by process %s, which ended first", kept, folder.name)
        return kept

    def close(self) -> None:
        """Release this process's folder: deleted when nothing is left in it, else kept for recovery."""
        with self._lock:
            if self._fd is None:
                return
            if not self.entries():
                shutil.rmtree(self.folder, ignore_errors=True)
            os.close(self._fd)
            self._fd = None
