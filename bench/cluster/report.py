"""The run's figures: requests and failures by phase, nginx's failover, and the closing note."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.cluster.checks import CrossNode, NodeMetrics, StoreCheck
from bench.cluster.proxy import Attempt
from bench.cluster.scenario import Plan, Timeline


def _end(record: dict[str, Any]) -> float:
    return record["start"] + record["ms"] / 1000


@dataclass
class Window:
    """Requests of the load that ended within a phase, and those that failed."""

    name: str
    sent: int
    failed: int
    slowest_s: float  # the longest answer: a request waiting for a node to start shows here
    why: dict[str, int] = field(default_factory=dict)  # failure message -> count


def window(name: str, records: list[dict[str, Any]], start: float, end: float) -> Window:
    """Count the requests that ended in [start, end)."""
    inside = [r for r in records if start <= _end(r) < end]
    why = Counter((r.get("error") or "?")[:120] for r in inside if not r["ok"])
    slowest = max((r["ms"] for r in inside), default=0.0) / 1000
    return Window(name, len(inside), sum(not r["ok"] for r in inside), slowest, dict(why.most_common(5)))


@dataclass
class Failover:
    """How nginx saw node A die and come back (from its access log)."""

    tries_while_dead: int  # requests nginx sent towards A after the kill, before it was back
    passed_on: int  # of those, answered by B instead (A refused the connection: nginx tried B)
    stopped_after_s: float | None  # from the kill to nginx's last try on A before it left A out
    probes: int  # later single tries on A while it was still dead (one per fail_timeout)
    # Requests nginx had already written to A when it died (in A's hands, or on a kept-alive
    # connection A's death closed): nginx answers 502, as it does not send a POST twice.
    cut_off: int
    tried_again_after_s: float | None  # from the kill to nginx's first request to the restarted A
    back_after_kill_s: float | None  # from the kill to A's answer to it: A is in the pool again
    back_after_warm_s: float | None  # from A's workers being warm to that answer


def failover(attempts: list[Attempt], node: str, timeline: Timeline, fail_timeout: float) -> Failover:
    """Measure, from nginx's log, when it stopped sending to the dead node and when it took it back."""
    down = [a for a in attempts if a.end >= timeline.killed and a.start < timeline.restarted]
    dead = sorted((a for a in down if a.tried(node) and a.start >= timeline.killed), key=lambda a: a.start)
    burst = [a for a in dead if a.start < dead[0].start + 0.9 * fail_timeout]
    back, tried = timeline.taken_back, timeline.first_try
    return Failover(
        tries_while_dead=len(dead),
        passed_on=sum(a.answered_by != node and a.status < 500 for a in dead),
        stopped_after_s=burst[-1].start - timeline.killed if burst else None,
        probes=len(dead) - len(burst),
        cut_off=sum(a.answered_by == node and a.status >= 500 for a in down),
        tried_again_after_s=None if tried is None else tried - timeline.killed,
        back_after_kill_s=None if back is None else back - timeline.killed,
        back_after_warm_s=None if back is None else back - timeline.ready,
    )


@dataclass
class Result:
    """Everything one run measured and checked."""

    plan: Plan
    timeline: Timeline
    calibration: int
    windows: list[Window]
    failover: Failover
    store: StoreCheck
    cross_node: CrossNode
    metrics: list[NodeMetrics]
    nginx_answers: dict[str, int]  # node -> requests it answered through nginx (whole run)
    startup: dict[str, float]
    listening: list[str]  # every address the cluster's processes listened on

    def window(self, name: str) -> Window:
        """One phase's counts by name."""
        return next(w for w in self.windows if w.name == name)

    def request_problems(self) -> list[str]:
        """Requests lost: any failure outside A's outage, or more in it than A had in flight."""
        found = list(self.timeline.notes)
        for name in ("before the kill", "after A was taken back"):
            w = self.window(name)
            if w.failed:
                found.append(f"{w.failed} of {w.sent} requests failed {name}: {w.why}")
        during = self.window("A down")
        if during.failed > self.failover.cut_off:
            found.append(
                f"{during.failed} requests failed while A was down, more than the "
                f"{self.failover.cut_off} nginx had sent to A when it died: {during.why}"
            )
        return found

    def failover_problems(self, stop_within_s: float = 2.0) -> list[str]:
        """nginx must leave the dead node out at once and take it back once it answers."""
        f, found = self.failover, []
        if f.stopped_after_s is None or f.stopped_after_s > stop_within_s:
            found.append(f"nginx did not stop sending to the dead node within {stop_within_s} s: {f}")
        if f.back_after_kill_s is None:
            found.append(f"nginx never took the restarted node back: {f}")
        return found

    def store_problems(self) -> list[str]:
        """Every acknowledged image once in the database and on disk, with its thumbnail."""
        return [] if self.store.ok else [store_problem(self.store)]

    def node_problems(self) -> list[str]:
        """One node's image read through the other; each node's /metrics."""
        found = [] if self.cross_node.ok else [f"cross-node check failed: {self.cross_node}"]
        for m in self.metrics:
            if m.status != 200 or not m.total:
                found.append(f"node {m.name}'s /metrics answered {m.status} with {m.total:.0f} requests")
        return found

    def loopback_problems(self) -> list[str]:
        """Nothing listens beyond 127.0.0.1."""
        return [f"listening beyond loopback: {a}" for a in self.listening if not a.startswith("127.0.0.1:")]

    def problems(self) -> list[str]:
        """What broke an invariant (empty when the run proved everything)."""
        return (
            self.request_problems() + self.failover_problems() + self.store_problems() + self.node_problems()
        )

    def as_dict(self) -> dict[str, Any]:
        """The result as plain data (for --json)."""
        return asdict(self)


def store_problem(store: StoreCheck) -> str:
    """Say what the store lacks."""
    parts = [f"{e.name}: {e.lost} answered images missing" for e in store.endpoints if e.lost] + [
        f"{e.name}: {e.extra} rows beyond the requests sent" for e in store.endpoints if e.extra
    ]
    if store.uploads_missing:
        parts.append(f"{len(store.uploads_missing)} uploads answered 201 have no row")
    if store.bad_files:
        parts.append(f"{len(store.bad_files)} rows without their file")
    if store.missing_thumbnails:
        parts.append(
            f"{len(store.missing_thumbnails)} rows without a thumbnail: {store.missing_thumbnails[:3]}"
        )
    return "store: " + "; ".join(parts)


def render(result: Result) -> str:
    """The closing note, as printed at the end of the run."""
    t, f, s, x = result.timeline, result.failover, result.store, result.cross_node
    load = [w for w in result.windows if w.name == "whole load"][0]

    def since(moment: float) -> str:
        return f"{moment - t.load_start:6.1f} s"

    lines = [
        f"load: {result.plan.users} locust users for {result.plan.seconds} s through nginx "
        f"({result.calibration} calibration requests before)",
        f"requests sent {load.sent}, failed {load.failed}",
    ]
    lines += [
        f"  {w.name:<24} {w.sent:6d} sent {w.failed:4d} failed, slowest {w.slowest_s:5.2f} s  {w.why or ''}"
        for w in result.windows
    ]
    events = [
        (t.killed, "kill -9 node A (master and workers)"),
        (t.restarted, f"A started again; every worker warm at {since(t.ready).strip()}"),
        (t.worker_stopped, f"Celery worker stopped; started at {since(t.worker_started).strip()}"),
        (t.worker_ready, "Celery worker ready"),
    ]
    if t.first_try is not None and t.taken_back is not None:
        events.append((t.first_try, f"nginx sends to A again; A answers at {since(t.taken_back).strip()}"))
    events += [
        (hup, f"HUP node {name}; its new workers warm at {since(warm).strip()}")
        for name, (hup, warm) in t.reloads.items()
    ]
    lines.append("timeline (seconds into the load):")
    lines += [f"  {since(moment)}  {text}" for moment, text in sorted(events)]
    lines += [
        "nginx failover:",
        f"  stopped sending to the dead node {_ms(f.stopped_after_s)} after the kill "
        f"({f.tries_while_dead} tries on it while dead, {f.passed_on} passed on to B, {f.probes} later probes)",
        f"  requests nginx had already sent to A when it died, answered 502: {f.cut_off}",
        f"  tried A again {_s(f.tried_again_after_s)} after the kill; A back in the pool "
        f"{_s(f.back_after_kill_s)} after the kill, {_s(f.back_after_warm_s)} after its workers were warm",
        "store:",
        f"  {s.rows} rows; {s.uploads_answered} uploads answered 201, {len(s.uploads_missing)} missing",
    ]
    lines += [
        f"  {e.name:<16} -> {e.endpoint:<10} sent {e.sent:5d} answered {e.answered:5d} rows {e.rows:5d}"
        + ("" if e.kept else "  (not in SAVE_ENDPOINTS)")
        + (f"  LOST {e.lost}" if e.lost else "")
        + (f"  EXTRA {e.extra}" if e.extra else "")
        for e in s.endpoints
    ]
    lines += [
        f"  files: {len(s.bad_files)} missing or altered, {len(s.orphan_files)} without a row "
        f"{s.orphan_files[:3]}, {s.temp_files} of the store's own dot files ({s.journal_entries} journal entries)",
        f"  thumbnails: {len(s.missing_thumbnails)} missing after waiting {s.thumbnails_waited_s:.1f} s; "
        f"{s.queued_while_stopped} queued while the worker was stopped, all made "
        f"{_s(s.caught_up_s)} after it was ready",
        f"cross-node: image {x.image_id} saved through {x.saved_by}: listed by {x.read_by} {_yes(x.listed)}, "
        f"downloaded identical {_yes(x.downloaded)}, thumbnail after {_s(x.thumbnail_s)}"
        + (f" ({x.problem})" if x.problem else ""),
        "metrics (each node's own /metrics; A counts since its restart):",
    ]
    lines += [
        f"  node {m.name}: /metrics {m.status}, requests {m.total:.0f} {m.requests}, images saved {m.saved:.0f}"
        + (f", store failures {m.store_failures}" if m.store_failures else "")
        + f"; nginx got {result.nginx_answers.get(m.name, 0)} answers from it"
        for m in result.metrics
    ]
    lines.append("start-up: " + ", ".join(f"{k} {v:.1f} s" for k, v in result.startup.items()))
    lines.append(f"listening: {', '.join(result.listening)}")
    problems = result.problems()
    lines.append("RESULT: " + ("every invariant holds" if not problems else "FAILED"))
    lines += [f"  - {p}" for p in problems]
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "never" if value is None else f"{value * 1000:.0f} ms"


def _s(value: float | None) -> str:
    return "never" if value is None else f"{round(value, 1) + 0.0:.1f} s"  # + 0.0: no "-0.0"


def _yes(value: bool) -> str:
    return "yes" if value else "NO"
