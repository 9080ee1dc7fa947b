"""The store's one thread pool: daemon threads draining a bounded queue, started on first use.

The background writer (one thread) and the thumbnail runners (THUMBNAIL_WORKERS threads, plus
one that publishes to Celery) are all this pool with a different `handle`. With `batch` > 1,
`handle` gets a list: what is queued when a thread wakes up, up to `batch` items, so that the
writer commits many images at once when it is behind and one at a time when it is not.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class WorkerPool(Generic[T]):
    """Call `handle(item)` (or `handle(items)`, batched) on `workers` daemon threads for what is queued."""

    def __init__(
        self,
        name: str,
        handle: Callable[[Any], None],
        *,
        workers: int = 1,
        queue_size: int,
        batch: int = 1,
    ):
        self.name = name
        self.handle = handle
        self.count = workers
        self.batch = batch
        self.queue: queue.Queue[T | None] = queue.Queue(maxsize=queue_size)
        self.threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.closed = False

    def put(self, item: T, timeout: float = 0) -> bool:
        """Queue an item, waiting up to `timeout` seconds for room; False when full or closed."""
        if self.closed:
            return False
        self.start()
        try:
            self.queue.put(item, timeout=timeout)  # 0: Full at once when there is no room
        except queue.Full:
            return False
        return True

    def start(self) -> None:
        """Start the threads (once)."""
        if self.threads:
            return
        with self._lock:
            if not self.threads and not self.closed:
                for n in range(self.count):
                    thread = threading.Thread(target=self._loop, name=f"{self.name}-{n}", daemon=True)
                    thread.start()
                    self.threads.append(thread)

    def _loop(self) -> None:
        while True:
            items = [self.queue.get()]
            while items[-1] is not None and len(items) < self.batch:
                try:
                    items.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            work = [item for item in items if item is not None]
            try:
                if work:
                    self.handle(work if self.batch > 1 else work[0])
            finally:
                for _ in items:
                    self.queue.task_done()
            if len(work) < len(items):  # this thread's stop mark (one per thread)
                return

    @property
    def pending(self) -> int:
        """Return how many items are queued or being handled."""
        return self.queue.unfinished_tasks

    def drain(self, timeout: float) -> bool:
        """Wait until every queued item is handled; True when that happened in time."""
        deadline = time.monotonic() + timeout
        while self.queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Refuse new items, finish the queued ones (up to `timeout`), and stop the threads."""
        self.closed = True
        if self.threads:
            self.drain(timeout)
            for _ in self.threads:
                try:
                    self.queue.put(None, timeout=1)
                except queue.Full:
                    break
            for thread in self.threads:
                thread.join(timeout=1)
