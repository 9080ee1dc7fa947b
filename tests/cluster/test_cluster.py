"""Two nodes behind nginx on loopback, a shorter `make cluster`: a node killed and restarted, the
Celery worker stopped, a rolling restart, all under locust; what must hold afterwards."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from bench.cluster.measure import measure
from bench.cluster.proxy import nginx_binary
from bench.cluster.report import Result, render
from bench.cluster.scenario import Plan
from bench.cluster.services import Unavailable

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

# The faults start a few seconds into the load and follow each other as soon as the previous one
# is over; locust stops 3 s after the last (`seconds` only bounds a very slow machine).
SHORT = Plan(
    users=4,
    spawn_rate=2,
    seconds=240,
    kill_at=3,
    down_s=2,
    worker_stop_at=2,
    worker_down_s=4,
    tail_s=3,
    stop_early=True,
)


def missing_program() -> str | None:
    """Name a program the cluster needs that is not installed (PostgreSQL is checked as it starts)."""
    if nginx_binary() is None:
        return "nginx is not installed (Debian nginx-light: make system-deps)"
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (Debian redis-server: make system-deps)"
    if not (Path(sys.executable).parent / "locust").exists():
        return "locust is not installed in this environment (pip install -e '.[dev]')"
    return None


@pytest.fixture(scope="module")
def result() -> Result:
    """One short run, shared by the checks below."""
    reason = missing_program()
    if reason:
        pytest.skip(reason)
    try:
        outcome = measure(SHORT)
    except Unavailable as exc:
        pytest.skip(str(exc))
    print(render(outcome))  # shown with -s, and in the report of a failed check
    return outcome


def test_only_requests_already_sent_to_the_killed_node_fail(result):
    assert result.window("whole load").sent > 50
    assert result.window("A down").sent > 0 and result.window("after A was taken back").sent > 0
    assert not result.request_problems(), render(result)


def test_a_rolling_restart_loses_no_request(result):
    reloads = result.window("rolling restart")
    assert set(result.timeline.reloads) == {"A", "B"}
    assert reloads.sent > 0 and reloads.failed == 0, render(result)


def test_nginx_leaves_the_dead_node_out_and_takes_it_back(result):
    assert not result.failover_problems(), render(result)
    # The restarted node answers through nginx again: its workers are warm when it does.
    assert result.failover.back_after_warm_s is not None and result.failover.back_after_warm_s > -1


def test_every_acknowledged_image_is_stored_once_with_its_thumbnail(result):
    uploads = next(e for e in result.store.endpoints if e.endpoint == "upload")
    assert uploads.answered > 0 and result.store.uploads_answered == uploads.answered
    assert any(e.kept and e.endpoint != "upload" and e.answered for e in result.store.endpoints)
    assert not result.store_problems(), render(result)


def test_the_stopped_worker_catches_up_on_its_thumbnails(result):
    stopped = result.window("worker stopped")
    assert stopped.sent > 0 and stopped.failed <= result.failover.cut_off
    assert not result.store.missing_thumbnails, render(result)


def test_an_image_saved_through_one_node_is_listed_and_served_by_the_other(result):
    cross = result.cross_node
    assert cross.listed and cross.downloaded and cross.thumbnail_s is not None, render(result)


def test_each_node_serves_its_own_metrics(result):
    assert not result.node_problems(), render(result)
    assert {m.name for m in result.metrics} == {"A", "B"}
    assert all(m.saved > 0 for m in result.metrics)


def test_nothing_listens_beyond_loopback(result):
    assert result.listening and not result.loopback_problems()
