"""gunicorn workers share kept-alive connections evenly (gthread_balanced.BalancedThreadWorker)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import psutil
import pytest

import gthread_balanced
from tests.hostile import live


@pytest.fixture
def table(monkeypatch):
    """A fresh table for each test, as the master makes before the first fork."""
    monkeypatch.setattr(gthread_balanced, "_table", gthread_balanced.multiprocessing.RawArray("q", 8))
    monkeypatch.setattr(gthread_balanced, "SLOTS", 4)
    monkeypatch.setattr(gthread_balanced, "_used", gthread_balanced.multiprocessing.RawValue("i", 0))
    return gthread_balanced._table


def sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_the_least_loaded_sibling_is_what_a_worker_compares_with(table):
    first, second = sleeper(), sleeper()
    try:
        own = gthread_balanced.claim(os.getpid())
        a = gthread_balanced.claim(first.pid)
        b = gthread_balanced.claim(second.pid)
        assert len({own, a, b}) == 3
        assert gthread_balanced.fewest_elsewhere(own) == 0
        table[2 * a + 1], table[2 * b + 1] = 5, 3
        assert gthread_balanced.fewest_elsewhere(own) == 3
        table[2 * b + 1] = -1  # stopped accepting for good: not waited on
        assert gthread_balanced.fewest_elsewhere(own) == 5
        gthread_balanced.release(first.pid)
        assert gthread_balanced.fewest_elsewhere(own) is None
    finally:
        first.kill()
        second.kill()


def test_a_dead_workers_slot_is_taken_over(table):
    gone = sleeper()
    gone.kill()
    gone.wait()
    for slot in range(gthread_balanced.SLOTS):
        table[2 * slot], table[2 * slot + 1] = gone.pid, 7
    # Every slot names a process that no longer exists: the next worker takes the first of them.
    assert gthread_balanced.claim(os.getpid()) == 0
    assert list(table[:2]) == [os.getpid(), 0]


def request_on(sock: socket.socket) -> None:
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:100]


def connections_per_worker(server: live.Server) -> list[int]:
    workers = psutil.Process(server.pid).children()
    return sorted(
        sum(
            c.status == psutil.CONN_ESTABLISHED and c.laddr.port == server.port
            for c in w.net_connections("tcp")
        )
        for w in workers
    )


@pytest.mark.slow
def test_kept_alive_connections_are_shared_between_the_workers(tmp_path):
    with live.gunicorn(tmp_path, workers=2, LOG_LEVEL="INFO") as server:
        deadline = time.monotonic() + live.START_SECONDS
        while server.log.read_text().count("app ready in pid") < 2:
            assert time.monotonic() < deadline, server.log.read_text()[-2000:]
            time.sleep(0.1)
        time.sleep(0.5)  # from the app's log line to the worker's accept loop
        sockets = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(8)]
        try:
            for sock in sockets:
                request_on(sock)
            assert connections_per_worker(server) == [4, 4]
        finally:
            for sock in sockets:
                sock.close()
