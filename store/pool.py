"""The store's one thread pool: daemon threads draining a bounded queue, started on first use.

The background writer (one thread) and the thumbnail runners (THUMBNAIL_WORKERS threads, plus
one that publishes to Celery) are all this pool with a different `handle`. With `batch` > 1,
`handle` gets a list: what is queued, up to `batch` items, after waiting up to `linger` seconds
for more to come when fewer are there (`drain` cuts the wait short), so that the writer commits
several images at once even when it keeps up.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)


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
        linger: float = 0.0,
    ):
        self.name = name
        self.handle = handle
        self.count = workers
        self.batch = batch
        self.linger = linger
        self._hurry = threading.Event()  # set by drain(): no lingering while someone waits
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
            if self.linger and items[0] is not None and self.queue.qsize() < self.batch - 1:
                # One wake-up per batch: more items gather while this thread sleeps.
                self._hurry.wait(self.linger)
                self._hurry.clear()
            while items[-1] is not None and len(items) < self.batch:
                try:
                    items.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            work = [item for item in items if item is not None]
            try:
                if work:
                    self.handle(work if self.batch > 1 else work[0])
            except Exception:  # a thread that died here would leave its queue unread for good
                log.exception("%s: an item could not be handled", self.name)
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
            self._hurry.set()
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
