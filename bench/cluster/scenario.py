"""The run: locust through nginx for a fixed time while a node is killed and restarted, the worker is
stopped and started, and both nodes are reloaded one after the other."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.cluster.services import Cluster
from bench.payloads import ROOT

RECORDER = Path(__file__).with_name("recorder.py")

log = logging.getLogger("bench.cluster")


@dataclass(frozen=True)
class Plan:
    """Load and faults: locust's users and seconds, and when each fault happens (seconds into the load).

    Node A is killed at `kill_at` and started again `down_s` later; once nginx has taken it back,
    the nodes are reloaded (HUP) one after the other. The Celery worker is stopped at
    `worker_stop_at` for `worker_down_s`, on its own clock. With `stop_early`, locust is stopped
    `tail_s` after the last fault instead of running its full `seconds` (the test's shorter run).
    """

    users: int = 16
    spawn_rate: float = 4.0
    seconds: int = 120
    kill_at: float = 10.0
    down_s: float = 5.0
    worker_stop_at: float = 60.0
    worker_down_s: float = 15.0
    tail_s: float = 5.0
    stop_early: bool = False
    start_timeout: float = 180.0


@dataclass
class Timeline:
    """When each thing happened (epoch seconds), and what was measured on the way."""

    load_start: float = 0.0
    load_stop: float = 0.0
    killed: float = 0.0
    restarted: float = 0.0
    ready: float = 0.0  # A's every worker warm again
    first_try: float | None = None  # nginx's first request to A after the restart began
    taken_back: float | None = None  # ... and when A answered it: A is in the pool again
    worker_stopped: float = 0.0
    worker_started: float = 0.0
    worker_ready: float = 0.0
    reloads: dict[str, tuple[float, float]] = field(default_factory=dict)  # node -> (HUP, warm)
    last_fault_done: float = 0.0
    locust_rc: int | None = None
    notes: list[str] = field(default_factory=list)


def read_records(path: Path) -> list[dict[str, Any]]:
    """Read the recorder's JSON lines (a line being written is skipped)."""
    records = []
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    for line in text.splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def start_locust(cluster: Cluster, plan: Plan, record_path: Path, log_path: Path) -> subprocess.Popen:
    """Start locust headless through nginx: locust.py's users, the recorder beside them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VISION_", "LOCUST_"))}
    env["CLUSTER_REQUEST_LOG"] = str(record_path)
    script = Path(sys.executable).parent / "locust"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "locust"]
    args = [
        *command,
        "-f",
        f"locust.py,{RECORDER.relative_to(ROOT)}",
        "--headless",
        "-u",
        str(plan.users),
        "-r",
        str(plan.spawn_rate),
        "-t",
        f"{plan.seconds}s",
        "--stop-timeout",
        "10",
        "--host",
        cluster.nginx.url,
        "--only-summary",
    ]
    log = open(log_path, "w")  # noqa: SIM115 - locust writes to it for its whole life
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_for_record(path: Path, kind: str, proc: subprocess.Popen, timeout: float) -> float:
    """Wait for the recorder's start or stop line; return its time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record in read_records(path):
            if record.get("kind") == kind:
                return record["t"]
        if proc.poll() is not None and kind == "start":
            raise RuntimeError(f"locust exited ({proc.returncode}) before the load started")
        time.sleep(0.1)
    raise TimeoutError(f"locust wrote no {kind!r} line in {timeout:.0f} s")


def sleep_until(moment: float) -> None:
    """Wait for a point on the plan's clock."""
    delay = moment - time.time()
    if delay > 0:
        time.sleep(delay)


def wait_taken_back(cluster: Cluster, node: str, since: float, timeout: float) -> tuple[float, float] | None:
    """Wait until `node` answers a request nginx sent it after `since`; return (sent, answered)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for attempt in cluster.nginx.attempts():
            answer = attempt.tried(node)
            if attempt.start >= since and answer is not None and answer.startswith(("2", "4")):
                return attempt.start, attempt.end
        time.sleep(0.1)
    return None


def stop_worker_for_a_while(cluster: Cluster, plan: Plan, timeline: Timeline) -> None:
    """Stop the Celery worker on the plan's clock, then start it again."""
    sleep_until(timeline.load_start + plan.worker_stop_at)
    timeline.worker_stopped = time.time()
    cluster.stop_worker()
    log.info("Celery worker stopped for %.0f s", plan.worker_down_s)
    sleep_until(timeline.worker_stopped + plan.worker_down_s)
    timeline.worker_started = time.time()
    cluster.start_worker()
    timeline.worker_ready = time.time()
    log.info("Celery worker ready again")


def kill_restart_and_reload(cluster: Cluster, plan: Plan, timeline: Timeline) -> None:
    """kill -9 node A, start it again, wait until nginx takes it back, then HUP each node in turn."""
    a, b = cluster.nodes
    sleep_until(timeline.load_start + plan.kill_at)
    timeline.killed = a.kill()
    log.info("killed node A (kill -9)")
    sleep_until(timeline.killed + plan.down_s)
    timeline.restarted = time.time()
    a.restart(plan.start_timeout)
    timeline.ready = time.time()
    log.info("node A started again, warm after %.1f s", timeline.ready - timeline.restarted)
    # nginx tries a failed node again fail_timeout after its last failure; give it that and more.
    back = wait_taken_back(cluster, a.address, timeline.restarted, cluster.nginx.fail_timeout + 30)
    if back is None:
        timeline.notes.append("nginx did not send to the restarted node A again")
    else:
        timeline.first_try, timeline.taken_back = back
        log.info("nginx took node A back")
    for node in (a, b):  # a rolling restart: one node at a time, the next once it is warm
        log.info("HUP node %s", node.name)
        timeline.reloads[node.name] = node.reload(plan.start_timeout)


def run(cluster: Cluster, plan: Plan) -> tuple[Timeline, list[dict[str, Any]]]:
    """Drive the cluster through the plan; return the timeline and every request locust sent."""
    record_path = cluster.workdir / "requests.jsonl"
    timeline = Timeline()
    locust = start_locust(cluster, plan, record_path, cluster.workdir / "locust.log")
    log.info("locust: %d users for %d s through %s", plan.users, plan.seconds, cluster.nginx.url)
    try:
        # Calibration (each payload once, through nginx) comes before the clock starts.
        timeline.load_start = wait_for_record(record_path, "start", locust, plan.start_timeout)
        with ThreadPoolExecutor(1) as pool:
            worker = pool.submit(stop_worker_for_a_while, cluster, plan, timeline)
            kill_restart_and_reload(cluster, plan, timeline)
            worker.result()
        timeline.last_fault_done = time.time()
        elapsed = timeline.last_fault_done - timeline.load_start
        log.info("faults done %.1f s into the load", elapsed)
        if elapsed + plan.tail_s > plan.seconds:
            timeline.notes.append(
                f"the faults ended {elapsed:.1f} s into a {plan.seconds} s load: "
                f"less than {plan.tail_s:.0f} s of load followed them"
            )
        if plan.stop_early:
            sleep_until(timeline.last_fault_done + plan.tail_s)
            locust.terminate()  # locust stops its users and writes its summary
        timeline.locust_rc = locust.wait(timeout=plan.seconds + 120)
        timeline.load_stop = wait_for_record(record_path, "stop", locust, 5)
    finally:
        if locust.poll() is None:
            locust.terminate()
            locust.wait(timeout=30)
    return timeline, read_records(record_path)
