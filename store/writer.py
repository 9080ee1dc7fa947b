"""The background writer: predictions hand their image over and never wait for the database.

`submit()` appends the image to the process's journal (store.journal: one write() to an open
file, no fsync), then puts it on a bounded queue; one thread hands what is queued (up to BATCH
images) to the store's `save_entries()`, which keeps them with one commit, and marks each record
done once its image is kept. So an answered request's image survives its process: what a
process that dies had journalled is kept by the next one to start.

A canvas's decoded pixels wait with it (up to HOLD_BYTES in all), so that the writer makes its
thumbnail from them rather than decoding the file again later (store.render). Past that budget
(the writer is behind) the request shrinks them to the thumbnail's size itself (0.1-0.2 ms, at
most 48 KB each) rather than leave the thumbnail to the slow path (1.7-3.7 ms: decode, Pillow,
two row updates).

A failed save (database or disk down) is logged and counted in `image_store_failures_total`,
never raised to the request; its record stays and is tried again (`retry_failed`, every
RETENTION_CHECK_SECONDS, or at the next start). An image that is not kept at all (the queue
stayed full, the journal cannot be written, the store is closing) is counted in
`image_store_dropped_total`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cv2

from store.journal import Entry, Journal, Ticket
from store.metrics import DROPPED, FAILURES
from store.pool import WorkerPool
from store.records import StoreError, new_id
from store.render import DECODED_ONLY, Decoded, from_pixels, serves_itself, thumbnail_bgr

log = logging.getLogger(__name__)

# Images kept with one commit at most: enough to spread a commit thin, few enough that one bad
# image (each then tried alone) or a slow disk delays little.
BATCH = 32
# How long the writer waits for more images when fewer than BATCH are queued: at 200-400 images/s
# a worker then commits 5-10 at once (a commit alone cost 0.35-0.5 ms of CPU here, `python -m
# bench.store`). Only the row waits: the image is journalled before its request is answered.
LINGER_SECONDS = 0.025
# Decoded pixels held by queued images, for their thumbnails: 25 400x400 RGBA canvases, 200 of the
# digit page's 140x140 exports. A queue of 256 uploads' pixels could be 160 MB otherwise.
HOLD_BYTES = 16 * 1024 * 1024

SaveEntries = Callable[[list[tuple[Entry, Decoded | None]]], list[str | Exception]]


@dataclass
class _Job:
    entry: Entry
    ticket: Ticket  # the journal record, marked done once the image is kept
    decoded: Decoded | None = None  # the request's pixels, for the thumbnail
    queued_at: float = field(default_factory=time.monotonic)


class Writer:
    """Keep journalled images through `save(items)` (the store's `save_entries`) on one background thread."""

    def __init__(
        self,
        save: SaveEntries,
        journal: Journal,
        *,
        queue_size: int = 256,
        queue_wait: float = 2.0,
        batch: int = BATCH,
        linger: float = LINGER_SECONDS,
        hold_bytes: int = HOLD_BYTES,
        thumbnail_size: int = 128,
    ):
        self.save = save
        self.journal = journal
        # How long a request waits for a free slot when the writer is behind (a saturated
        # worker gives its writer thread little CPU) before the image is dropped and counted.
        self.queue_wait = queue_wait
        self.pool: WorkerPool[_Job] = WorkerPool(
            "image-store-writer", self._write, queue_size=queue_size, batch=batch, linger=linger
        )
        self.hold_bytes = hold_bytes
        self.thumbnail_size = thumbnail_size
        self._held = 0  # bytes of decoded pixels the queued jobs hold
        self._held_lock = threading.Lock()
        self._failed: list[Ticket] = []
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
            ticket = self.journal.append(entry)
        except OSError as exc:
            FAILURES.labels("disk").inc()
            DROPPED.labels("journal").inc()
            log.error("image from %s not kept: cannot journal it: %s", endpoint, exc)
            return None
        job = _Job(entry, ticket, self._hold(image))
        if not self.pool.put(job, timeout=self.queue_wait):
            self._release(job)
            self._give_up(entry.image_id, ticket)
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

    def _hold(self, image: Any) -> Decoded | None:
        """Return the pixels to make the thumbnail from: the request's while the budget has room,
        else shrunk to the thumbnail's size here; None when it must be made from the file."""
        pixels = getattr(image, "pixels", None)
        if pixels is None or not from_pixels(image.data, image.format):
            return None
        if image.data is not None and serves_itself(
            image.data, image.format, image.width, image.height, self.thumbnail_size
        ):
            return DECODED_ONLY  # its own thumbnail: nothing to make or hold
        size = 0 if image.data is None else pixels.nbytes  # a legacy array is held by its entry anyway
        with self._held_lock:
            if self._held + size <= self.hold_bytes:
                self._held += size
                return Decoded(pixels, image.order)
        try:
            return Decoded(thumbnail_bgr(pixels, image.order, self.thumbnail_size), "BGR", small=True)
        except (ValueError, cv2.error) as exc:
            log.warning("thumbnail of an image from %s left for later: %s", image.source, exc)
            return None

    def _release(self, job: _Job) -> None:
        if job.decoded is not None and not job.decoded.small and job.entry.data is not None:
            with self._held_lock:
                self._held -= job.decoded.pixels.nbytes
        job.decoded = None

    @property
    def held_bytes(self) -> int:
        """Return the bytes of decoded pixels that queued images hold for their thumbnails."""
        return self._held

    def _write(self, jobs: list[_Job]) -> None:
        try:
            results = self.save([(job.entry, job.decoded) for job in jobs])
        except Exception as exc:  # not expected of save_entries: each job gets it
            results = [exc] * len(jobs)
        for job, result in zip(jobs, results, strict=True):
            self._release(job)
            if isinstance(result, Exception):
                self._failed_one(job, result)
            else:
                self.journal.done(job.ticket)

    def _failed_one(self, job: _Job, exc: Exception) -> None:
        entry = job.entry
        if isinstance(exc, StoreError):
            FAILURES.labels(exc.reason).inc()
            log.error(
                "image from %s not kept yet (%s), tried again later: %s", entry.endpoint, exc.reason, exc
            )
            with self._failed_lock:
                self._failed.append(job.ticket)  # its bytes are in the journal, not held in memory
            return
        FAILURES.labels("unexpected").inc()
        DROPPED.labels("unexpected").inc()
        log.error("image from %s not kept", entry.endpoint, exc_info=exc)
        self._give_up(entry.image_id, job.ticket)

    def _give_up(self, image_id: str, ticket: Ticket) -> None:
        """Mark an image as not to be kept, so that recovery leaves it out too."""
        try:
            self.journal.drop(image_id)
        except OSError as exc:
            log.warning("could not mark image %s as dropped in the journal: %s", image_id, exc)
        self.journal.done(ticket)

    def retry_failed(self) -> int:
        """Queue again the journalled images whose save failed; return how many."""
        with self._failed_lock:
            tickets, self._failed = self._failed, []
        queued = 0
        for number, ticket in enumerate(tickets):
            try:
                entry = self.journal.read(ticket)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("a journalled image cannot be read back, not kept: %s", exc)
                DROPPED.labels("journal_unreadable").inc()
                self.journal.done(ticket)
                continue
            if not self.pool.put(_Job(entry, ticket), timeout=0):
                with self._failed_lock:
                    self._failed.extend(tickets[number:])
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
