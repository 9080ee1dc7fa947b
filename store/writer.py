"""The background writer: predictions hand their image over and never wait for the disk or the database.

`submit()` puts the image on a bounded queue; one thread calls the store's `save()` for each. A
failure there is logged and counted in `image_store_failures_total`, never raised to the request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from store.metrics import FAILURES
from store.pool import WorkerPool
from store.records import NewImage, StoreError, new_id

log = logging.getLogger(__name__)


@dataclass
class _Job:
    image_id: str
    # The upload's own bytes when it has them; else (a legacy pixel array) the InputImage,
    # PNG-encoded in the writer thread so the request does not pay for it. Never the decoded
    # pixels of an upload: 256 queued 400x400 canvases would hold 200 MB of a worker's memory.
    data: bytes | None
    image: Any
    format: str
    width: int
    height: int
    endpoint: str
    model: str | None
    prediction: str | None
    confidence: float | None
    queued_at: float = field(default_factory=time.monotonic)


class Writer:
    """Keep queued images through `save(new, image_id=...)` on one background thread."""

    def __init__(self, save: Callable[..., str], *, queue_size: int = 256, queue_wait: float = 2.0):
        self.save = save
        # How long a request waits for a free slot when the writer is behind (a saturated
        # worker gives its writer thread little CPU) before the image is dropped and counted.
        self.queue_wait = queue_wait
        self.pool: WorkerPool[_Job] = WorkerPool("image-store-writer", self._write, queue_size=queue_size)

    def submit(
        self,
        image: Any,
        *,
        endpoint: str,
        model: str | None,
        prediction: Any,
        confidence: float | None,
    ) -> str | None:
        """Queue an InputImage for a background write; return its future id, None when dropped."""
        if self.pool.closed:
            return None
        image_id = new_id()
        job = _Job(
            image_id,
            data=image.data,
            image=None if image.data is not None else image,
            format="PNG" if image.format == "ARRAY" else image.format,
            width=image.width,
            height=image.height,
            endpoint=endpoint,
            model=model,
            prediction=_prediction_text(prediction),
            confidence=confidence,
        )
        if not self.pool.put(job, timeout=self.queue_wait):
            if self.pool.closed:
                return None
            FAILURES.labels("queue_full").inc()
            log.warning(
                "image store queue is full (%d) after waiting %.1f s: image from %s not kept",
                self.pool.queue.maxsize,
                self.queue_wait,
                endpoint,
            )
            return None
        return image_id

    def _write(self, job: _Job) -> None:
        try:
            new = NewImage(
                data=job.data if job.data is not None else job.image.encoded(),
                format=job.format,
                width=job.width,
                height=job.height,
                endpoint=job.endpoint,
                model=job.model,
                prediction=job.prediction,
                confidence=job.confidence,
            )
            self.save(new, image_id=job.image_id)
        except StoreError as exc:
            FAILURES.labels(exc.reason).inc()
            log.error("image from %s not kept (%s): %s", job.endpoint, exc.reason, exc)
        except Exception:
            FAILURES.labels("unexpected").inc()
            log.exception("image from %s not kept", job.endpoint)

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
