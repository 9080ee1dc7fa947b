"""One writer at a time for a SQLite file, across processes, handed over as soon as it is released.

SQLite lets one connection write at a time; the others wait in its busy handler, which sleeps in
growing steps (1, 2, 5, 10 ... up to 100 ms) between tries. With two gunicorn workers saving
uploads and their writer threads committing batches, a waiting transaction kept sleeping long
after the lock was free while the other process took it again and again: the gallery upload's
p99 was 100-640 ms for a 12-29 ms p50 at 8 clients (docs/PERFORMANCE.md). Here each write
transaction first takes an advisory lock on a file beside the database (`<database>-writer.lock`,
`flock`): threads of one process queue on a mutex, processes on the file lock, where the kernel
wakes a waiter when it is released; SQLite's own lock is then free when BEGIN IMMEDIATE asks.

The file lock is waited for without a time limit: it is held only around one short transaction,
and the kernel releases it when its process exits or is killed (gunicorn kills a stuck worker).
The mutex keeps SQLite's 30 s: a thread that would wait longer gets the database error SQLite
would have raised. `flock` locks belong to an open file, which a forked child shares with its
parent, so a forked child starts with no descriptor and a free mutex (`os.register_at_fork`).
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.exc import OperationalError

TIMEOUT = 30.0  # as SQLite's busy_timeout here: a thread waiting longer fails as a database error

_locks: dict[str, WriteLock] = {}
_locks_guard = threading.Lock()


class WriteLock:
    """The write lock of one SQLite file in this process: a mutex for its threads, flock for the rest."""

    def __init__(self, path: Path):
        self.path = path
        self._forked()

    def _forked(self) -> None:
        """Start this process's own state: a free mutex, no descriptor yet (also in a forked child)."""
        # A child must not use the parent's descriptor (the same open file, so the parent's lock
        # would be "taken" at once) nor a mutex that a parent's thread held at the fork.
        self._mutex = threading.Lock()
        self._fd: int | None = None

    def _descriptor(self) -> int:
        """Return this process's descriptor of the lock file (under the mutex), opening it when needed."""
        if self._fd is None:
            # Read-only: flock needs no write access, so a lock file another user made still works.
            self._fd = os.open(self.path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        return self._fd

    @contextmanager
    def held(self, timeout: float = TIMEOUT) -> Iterator[None]:
        """Hold the lock for the block; OperationalError when this process's turn does not come in `timeout` s."""
        if not self._mutex.acquire(timeout=timeout):
            raise _busy(self.path, timeout)
        try:
            try:
                fd = self._descriptor()
            except OSError as exc:  # the database's folder is missing or unwritable: as SQLite would say
                raise OperationalError("BEGIN IMMEDIATE", None, exc) from exc
            fcntl.flock(fd, fcntl.LOCK_EX)  # the GIL is released while it waits
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            self._mutex.release()


def write_lock(database: str | os.PathLike) -> WriteLock:
    """Return the process's write lock of a SQLite database file (one per file)."""
    path = Path(f"{os.fspath(database)}-writer.lock")
    key = os.fspath(path)
    with _locks_guard:
        lock = _locks.get(key)
        if lock is None:
            lock = _locks[key] = WriteLock(path)
        return lock


def _after_fork_in_child() -> None:
    for lock in _locks.values():
        lock._forked()
    global _locks_guard
    _locks_guard = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _busy(path: Path, timeout: float) -> OperationalError:
    return OperationalError(
        "BEGIN IMMEDIATE", None, TimeoutError(f"database is locked: no write turn in {timeout:g} s ({path})")
    )
