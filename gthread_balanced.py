"""A gunicorn gthread worker that takes a new connection only when no sibling holds fewer.

gunicorn's workers share one listening socket and each accepts for itself, so a burst of new
connections goes to whichever worker wakes first. Clients that keep their connections (a load
balancer's upstream keep-alive, wrk, locust) then stay where they landed: in 7 of 18 benchmark
rounds every connection sat on one worker while the other idled, at half the throughput
(docs/PERFORMANCE.md). Here each worker publishes how many connections it holds in a table in
shared memory, made by the master before the first fork, and stops accepting while it holds more
than the least loaded of its live siblings; the kernel then hands the waiting connection to one
that is accepting. Some worker always has the fewest connections, so one is always accepting, and
a worker leaves the table when it stops accepting for good (shutdown) or dies (`release`, from the
master's `child_exit` hook), so nobody waits on it. Counts differ by at most one connection.

    worker_class = "gthread_balanced.BalancedThreadWorker"   # gunicorn.conf.py
"""

from __future__ import annotations

import multiprocessing
import os

from gunicorn.workers.gthread import ThreadWorker

# (pid, connections) pairs; pid 0 is a free slot, connections -1 a worker not accepting for good.
SLOTS = 256
_table = multiprocessing.RawArray("q", 2 * SLOTS)
_lock = multiprocessing.Lock()
# Slots below this have been claimed at some time: the scan before every poll stops here (2 slots
# for 2 workers take 0.3 us; all 256 took 11 us).
_used = multiprocessing.RawValue("i", 0)


def claim(pid: int) -> int | None:
    """Take a free slot for `pid` (or one a dead process left); None when the table is full."""
    with _lock:
        for slot in range(SLOTS):
            holder = _table[2 * slot]
            if holder == 0 or holder == pid or not _alive(holder):
                _table[2 * slot], _table[2 * slot + 1] = pid, 0
                _used.value = max(_used.value, slot + 1)
                return slot
    return None


def release(pid: int) -> None:
    """Free the slot of a worker that has exited (called in the master)."""
    with _lock:
        for slot in range(SLOTS):
            if _table[2 * slot] == pid:
                _table[2 * slot], _table[2 * slot + 1] = 0, 0


def fewest_elsewhere(own: int) -> int | None:
    """Return the fewest connections any other accepting worker holds (None when there is none)."""
    least = None
    for slot in range(_used.value):
        if slot == own or _table[2 * slot] == 0:
            continue
        count = _table[2 * slot + 1]
        if count >= 0 and (least is None or count < least):
            least = count
    return least


def _alive(pid: int) -> bool:
    """Return whether a process with this pid exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class BalancedThreadWorker(ThreadWorker):
    """gthread, accepting only while no sibling worker holds fewer connections."""

    _slot: int | None = None
    _nr_conns = 0
    _limit = 0

    @property
    def nr_conns(self) -> int:
        """Connections this worker holds (in a request or kept alive); published to the table."""
        return self._nr_conns

    @nr_conns.setter
    def nr_conns(self, value: int) -> None:
        self._nr_conns = value
        if self._slot is not None and self._accepting_for_good():
            _table[2 * self._slot + 1] = value

    @property
    def worker_connections(self) -> int:
        """The connection limit gthread checks before every poll: this worker's own count while it is ahead."""
        if self._slot is None:
            return self._limit
        least = fewest_elsewhere(self._slot)
        if least is not None and self._nr_conns > least:
            return self._nr_conns  # not under the limit: gthread stops accepting until the next check
        return self._limit

    @worker_connections.setter
    def worker_connections(self, value: int) -> None:
        self._limit = value

    def run(self) -> None:
        """Join the table once the app is loaded (a booting worker must not hold others back), then serve."""
        self._slot = claim(os.getpid())
        if self._slot is not None:
            _table[2 * self._slot + 1] = self._nr_conns
        super().run()

    def set_accept_enabled(self, enabled: bool) -> None:
        """Leave the table when accepting stops for good, so siblings do not wait on this worker."""
        super().set_accept_enabled(enabled)
        if not enabled and not self.alive and self._slot is not None:
            _table[2 * self._slot + 1] = -1

    def _accepting_for_good(self) -> bool:
        return self.alive or self._accepting
