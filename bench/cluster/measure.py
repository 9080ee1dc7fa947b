"""One run from start to closing note: start the cluster, run the plan, check, measure."""

from __future__ import annotations

from collections import Counter

from bench.cluster import checks, scenario
from bench.cluster.report import Result, failover, window
from bench.cluster.services import Cluster, Sizes


def measure(plan: scenario.Plan, sizes: Sizes | None = None, thumbnail_timeout: float = 90) -> Result:
    """Run the plan on a fresh cluster and return everything it measured."""
    with Cluster(sizes or Sizes()) as cluster:
        listening = cluster.listening()
        timeline, records = scenario.run(cluster, plan)
        load = [r for r in records if r.get("kind") == "request"]
        t = timeline
        back = t.taken_back or t.ready
        first_hup, last_warm = min(h for h, _ in t.reloads.values()), max(w for _, w in t.reloads.values())
        windows = [
            window("whole load", load, 0, float("inf")),
            window("before the kill", load, 0, t.killed),
            window("A down", load, t.killed, back),
            window("after A was taken back", load, back, float("inf")),
            window("worker stopped", load, t.worker_stopped, t.worker_ready),
            # A request that ends up to a second after the last reload was in flight during it.
            window("rolling restart", load, first_hup, last_warm + 1.0),
        ]
        attempts = cluster.nginx.attempts()
        node_a = cluster.nodes[0]
        store = checks.check_store(cluster, timeline, records, thumbnail_timeout)
        # Read through B what was saved through A (straight to each node, not through nginx).
        cross = checks.check_cross_node(cluster.nodes[0], cluster.nodes[1])
        # Each node's /metrics counts since it last started: A since its restart.
        since = {node_a.address: t.restarted, cluster.nodes[1].address: 0.0}
        by_address = {n.address: n.name for n in cluster.nodes}
        answers = Counter(
            by_address[a.answered_by]
            for a in attempts
            if a.answered_by in since and a.status < 500 and a.start >= since[a.answered_by]
        )
        return Result(
            plan=plan,
            timeline=timeline,
            calibration=sum(r.get("kind") == "calibration" for r in records),
            windows=windows,
            failover=failover(attempts, node_a.address, timeline, cluster.nginx.fail_timeout),
            store=store,
            cross_node=cross,
            metrics=[checks.node_metrics(n) for n in cluster.nodes],
            nginx_answers=dict(answers),
            startup=dict(cluster.timings),
            listening=sorted(listening),
        )
