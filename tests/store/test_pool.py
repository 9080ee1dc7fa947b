"""The one thread pool behind the writer and the thumbnail runners."""

from __future__ import annotations

import threading
import time

from store.pool import WorkerPool


def test_every_item_is_handled_once_by_the_pool_threads():
    seen: list[tuple[int, str]] = []
    lock = threading.Lock()

    def handle(item: int) -> None:
        with lock:
            seen.append((item, threading.current_thread().name))

    pool = WorkerPool("test-pool", handle, workers=3, queue_size=100)
    assert pool.threads == []  # nothing runs before the first item
    assert all(pool.put(n) for n in range(50))
    assert pool.drain(10)
    assert sorted(item for item, _ in seen) == list(range(50))
    assert {name for _, name in seen} <= {"test-pool-0", "test-pool-1", "test-pool-2"}
    pool.close()
    assert not any(t.is_alive() for t in pool.threads)
    assert pool.put(99) is False  # closed: refused, not queued


def test_a_full_queue_refuses_at_once_or_after_the_wait():
    gate, busy = threading.Event(), threading.Event()
    pool = WorkerPool("gated", lambda item: (busy.set(), gate.wait(10)), queue_size=1)
    assert pool.put(1) and busy.wait(10)
    assert pool.put(2)  # queued behind the one being handled
    started = time.perf_counter()
    assert pool.put(3) is False
    assert pool.put(4, timeout=0.2) is False
    assert 0.15 < time.perf_counter() - started < 2
    gate.set()
    assert pool.drain(10)
    pool.close()


def test_a_batched_pool_hands_over_what_is_queued_at_once():
    batches: list[list[int]] = []
    gate, busy = threading.Event(), threading.Event()

    def handle(items: list[int]) -> None:
        batches.append(list(items))
        busy.set()
        gate.wait(10)

    pool = WorkerPool("batched", handle, queue_size=100, batch=8)
    assert pool.put(0) and busy.wait(10)  # the thread holds the first item alone
    assert all(pool.put(n) for n in range(1, 21))  # these wait while it is busy
    gate.set()
    assert pool.drain(10)
    assert batches[0] == [0]
    assert [len(b) for b in batches[1:]] == [8, 8, 4]  # three handovers, not twenty
    assert [n for b in batches for n in b] == list(range(21))
    pool.close()
    assert not any(t.is_alive() for t in pool.threads)


def test_a_handler_that_raises_does_not_stop_the_thread():
    seen: list[int] = []

    def handle(item: int) -> None:
        if item == 1:
            raise RuntimeError("a bug in the handler")
        seen.append(item)

    pool = WorkerPool("raising", handle, queue_size=10)
    assert all(pool.put(n) for n in range(4))
    assert pool.drain(10)
    assert seen == [0, 2, 3]
    pool.close()
