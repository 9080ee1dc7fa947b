"""The store's one thread pool: daemon threads draining a bounded queue, started on first use.

The background writer (one thread) and the thumbnail runners (THUMBNAIL_WORKERS threads, plus
one that publishes to Celery) are all this pool with a different `handle`.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class WorkerPool(Generic[T]):
    """Call `handle(item)` on `workers` daemon threads for every item put on a bounded queue."""

    def __init__(self, name: str, handle: Callable[[T], None], *, workers: int = 1, queue_size: int):
        self.name = name
        self.handle = handle
        self.count = workers
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
            item = self.queue.get()
            try:
                if item is None:
                    return
                self.handle(item)
            finally:
                self.queue.task_done()

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
