"""The background writer: predictions hand their image over and never wait for the database.

`submit()` journals the image on disk (store.journal: one small file, renamed into place, no
fsync), then puts it on a bounded queue; one thread calls the store's `save()` for each and
removes the entry once the image is kept. So an answered request's image survives its process:
a process that dies leaves its entries, which the next start keeps.

A failed save (database or disk down) is logged and counted in `image_store_failures_total`,
never raised to the request; its entry stays and is tried again (`retry_failed`, by the store's
maintenance, or at the next start). An image that is not kept at all (the queue stayed full, the
journal cannot be written, the store is closing) is counted in `image_store_dropped_total`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from store.journal import Entry, Journal
from store.metrics import DROPPED, FAILURES
from store.pool import WorkerPool
from store.records import NewImage, StoreError, new_id

log = logging.getLogger(__name__)


@dataclass
class _Job:
    entry: Entry
    path: Path  # the journal entry, removed once the image is kept
    queued_at: float = field(default_factory=time.monotonic)


class Writer:
    """Keep journalled images through `save(new, image_id=..., created_at=...)` on one background thread."""

    def __init__(
        self,
        save: Callable[..., str],
        journal: Journal,
        *,
        queue_size: int = 256,
        queue_wait: float = 2.0,
    ):
        self.save = save
        self.journal = journal
        # How long a request waits for a free slot when the writer is behind (a saturated
        # worker gives its writer thread little CPU) before the image is dropped and counted.
        self.queue_wait = queue_wait
        self.pool: WorkerPool[_Job] = WorkerPool("image-store-writer", self._write, queue_size=queue_size)
        self._failed: list[Path] = []
        self._failed_lock = threading.Lock()

    def submit(
        self,
        image: Any,
        *,
        endpoint: str,
        model: str | None,
        prediction: Any,
        confidence: float | None,
    ) -> str | None:
        """Journal an InputImage and queue its write; return its future id, None when not kept."""
        if self.pool.closed:
            DROPPED.labels("closed").inc()
            return None
        # The upload's own bytes when it has them; else (a legacy pixel array) its pixels, which the
        # writer thread encodes as PNG so that the request does not pay for it.
        entry = Entry(
            image_id=new_id(),
            created=time.time(),
            endpoint=endpoint,
            model=model,
            prediction=_prediction_text(prediction),
            confidence=confidence,
            format="PNG" if image.format == "ARRAY" else image.format,
            width=image.width,
            height=image.height,
            data=image.data,
            pixels=None if image.data is not None else image.pixels,
            order=image.order,
        )
        try:
            path = self.journal.write(entry)
        except OSError as exc:
            FAILURES.labels("disk").inc()
            DROPPED.labels("journal").inc()
            log.error("image from %s not kept: cannot journal it: %s", endpoint, exc)
            return None
        if not self.pool.put(_Job(entry, path), timeout=self.queue_wait):
            self.journal.remove(path)
            reason = "closed" if self.pool.closed else "queue_full"
            DROPPED.labels(reason).inc()
            if reason == "queue_full":
                FAILURES.labels("queue_full").inc()
                log.warning(
                    "image store queue is full (%d) after waiting %.1f s: image from %s not kept",
                    self.pool.queue.maxsize,
                    self.queue_wait,
                    endpoint,
                )
            return None
        return entry.image_id

    def _write(self, job: _Job) -> None:
        entry = job.entry
        try:
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
            self.save(new, image_id=entry.image_id, created_at=datetime.fromtimestamp(entry.created, UTC))
        except StoreError as exc:
            FAILURES.labels(exc.reason).inc()
            log.error(
                "image from %s not kept yet (%s), tried again later: %s", entry.endpoint, exc.reason, exc
            )
            with self._failed_lock:
                self._failed.append(job.path)
            return
        except Exception:
            FAILURES.labels("unexpected").inc()
            DROPPED.labels("unexpected").inc()
            log.exception("image from %s not kept", entry.endpoint)
        self.journal.remove(job.path)

    def retry_failed(self) -> int:
        """Queue again the journalled images whose save failed; return how many."""
        with self._failed_lock:
            paths, self._failed = self._failed, []
        queued = 0
        for number, path in enumerate(paths):
            try:
                entry = self.journal.read(path)
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if not self.pool.put(_Job(entry, path), timeout=0):
                with self._failed_lock:
                    self._failed.extend(paths[number:])
                break
            queued += 1
        return queued

    @property
    def queued(self) -> int:
        """Return how many writes wait in the queue."""
        return self.pool.pending

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued write is done; True when the queue drained in time."""
        return self.pool.drain(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Finish queued writes (up to `timeout`) and stop the thread."""
        self.pool.close(timeout)


def _prediction_text(prediction: Any) -> str | None:
    if prediction is None:
        return None
    if isinstance(prediction, str):
        return prediction
    if isinstance(prediction, list | tuple):
        return " ".join(str(p) for p in prediction)
    return str(prediction)
