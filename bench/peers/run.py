"""Our service against BentoML and LitServe, serving the same ONNX models with the same decoding.

`python -m bench.peers` (or `make bench-peers`) installs each peer in its own virtual environment
(bench/peers/.venv-*), starts ours (gunicorn.conf.py) and both peers with the same number of worker
processes on loopback, and drives them with wrk, interleaved point by point (ours, BentoML,
LitServe, ours, ...): requests/s, p50, p99 and server CPU per request at 1, 8 and 32 clients, for
the digits (the 280 px canvas and the page's 140 px export) and the doodle classifier, then each
server's RSS. It also times each model route's floor in-process (bench/peers/floor.py) and our
`/health`, for the route's own overhead. Results: bench/results/peers.json and, between its
markers, docs/PERFORMANCE.md. About 10 minutes with the defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil

from bench import payloads, wrk
from bench.peers import report
from bench.peers.floor import floor_ms
from bench.peers.report import RESULTS
from bench.peers.servers import PEERS, OursServer, PeerServer, ensure_venv
from bench.report import MB, machine
from bench.server import select_known

CANVAS = 280
DIGITS_CANVAS = f"/api/predict (canvas {CANVAS} px)"
# Route keys as the tables name them, and how to build their payloads (bench/payloads.py).
ROUTES = {
    "digits-280": (DIGITS_CANVAS, lambda n: payloads.digits(n, endpoint=DIGITS_CANVAS, size=CANVAS)),
    "digits-140": (payloads.PREDICT_PAGE, payloads.predict_page),
    "doodles": ("/api/classifier", payloads.classifier),
}
# Figures kept for each point: the median over the rounds is the one reported.
FIGURES = ("rps", "p50_ms", "p90_ms", "p99_ms", "cpu_ms", "other_work")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="1,8,32", help="concurrency levels (default 1,8,32)")
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per point (default 6)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per point (default 3)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of unrecorded load (default 1)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes for each server (default 2)")
    parser.add_argument("--routes", default=",".join(ROUTES), help=f"subset of {','.join(ROUTES)}")
    parser.add_argument("--peers", default=",".join(PEERS), help=f"subset of {','.join(PEERS)}")
    parser.add_argument("--samples", type=int, default=50, help="payloads per route, cycled (default 50)")
    parser.add_argument("--floor-loops", type=int, default=500, help="calls per floor part (default 500)")
    parser.add_argument("--no-install", action="store_true", help="use the peers' environments as they are")
    parser.add_argument("--json", type=Path, default=RESULTS / "peers.json")
    parser.add_argument(
        "--bench-json",
        type=Path,
        default=RESULTS / "latest.json",
        help="`make bench` results whose other routes join the tails table, when present",
    )
    parser.add_argument("--out", type=Path, default=payloads.ROOT / "docs" / "PERFORMANCE.md")
    parser.add_argument("--no-docs", action="store_true", help="print and save JSON only; leave docs/ alone")
    return parser.parse_args(argv)


def busy_seconds() -> float:
    """CPU time every core of the machine has spent on anything but idling, so far."""
    t = psutil.cpu_times()
    return sum(getattr(t, k, 0.0) for k in ("user", "nice", "system", "irq", "softirq", "steal"))


def own_seconds() -> float:
    """CPU time of this process and its reaped children (wrk)."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def point(server, script: Path, clients: int, seconds: float, others: list) -> dict:
    """Measure one server at one client count, and what the rest of the machine used meanwhile.

    `other_work` is the share of the cores that went to neither the server, the idle servers, wrk
    nor this process: other people's work on a shared machine, which the figures should be read with.
    """
    before = {id(s): s.cpu_seconds() for s in [server, *others]}
    workers = server.worker_cpu()
    busy, own, start = busy_seconds(), own_seconds(), time.perf_counter()
    row = wrk.run(server.base_url, script, connections=clients, seconds=seconds)
    wall, busy, own = time.perf_counter() - start, busy_seconds() - busy, own_seconds() - own
    cpu = server.cpu_seconds() - before[id(server)]
    idle = sum(s.cpu_seconds() - before[id(s)] for s in others)
    row["cpu_ms"] = round(1000 * cpu / row["requests"], 3) if row["requests"] else None
    row["idle_servers_cpu_s"] = round(idle, 3)
    row["other_work"] = round(max(0.0, busy - cpu - idle - own) / (wall * psutil.cpu_count()), 3)
    row["load_1m"] = round(os.getloadavg()[0], 2)
    # Workers that took at least a tenth of the work: with few keep-alive connections, a server
    # whose workers accept for themselves can end up with every connection on one worker.
    used = {pid: t - workers[pid] for pid, t in server.worker_cpu().items() if pid in workers}
    row["busy_workers"] = sum(t > 0.1 * cpu for t in used.values()) if cpu > 0 else 0
    return row


def summarise(rounds: list[dict]) -> dict:
    """The median of each figure over the rounds, the rounds themselves, and their errors."""
    out = {"clients": rounds[0]["clients"], "rounds": rounds}
    for key in FIGURES:
        values = [r[key] for r in rounds if r.get(key) is not None and r["requests"]]
        out[key] = round(statistics.median(values), 3) if values else None
    out["errors"] = sum(r["non_2xx"] + r["socket_errors"] for r in rounds)
    out["busy_workers"] = [r.get("busy_workers") for r in rounds]
    out["rps_range"] = [min(r["rps"] for r in rounds), max(r["rps"] for r in rounds)]
    return out


def measure_route(args, key: str, built: list, servers: list, clients: list[int], scratch: Path) -> dict:
    """Measure one route on every server, interleaved; return its entry."""
    kept_by_server, dropped = {}, {}
    for server in servers:
        kept, problems = select_known(server.base_url, built)
        kept_by_server[server.name] = {id(p) for p in kept}
        if problems:
            dropped[server.name] = problems
    # The same payloads for everyone: those every server answers right at rest.
    kept = [p for p in built if all(id(p) in ids for ids in kept_by_server.values())]
    if not kept:
        raise RuntimeError(f"{key}: no payload is answered right by every server: {dropped}")
    script = wrk.write_script(kept, scratch, key.replace("/", "_").replace(" ", "_"))
    if args.warmup > 0:
        for server in servers:
            wrk.run(server.base_url, script, connections=max(clients), seconds=args.warmup)
    points: dict[str, list] = {s.name: [] for s in servers}
    for c in clients:
        rounds: dict[str, list] = {s.name: [] for s in servers}
        for _ in range(args.rounds):
            for server in servers:
                others = [s for s in servers if s is not server]
                row = point(server, script, c, args.duration, others)
                rounds[server.name].append(row)
                print(
                    f"{key:30} {server.name:9} {c:3d} clients {row['rps']:8.1f} req/s  "
                    f"p50 {row['p50_ms']:7.2f}  p99 {row['p99_ms']:7.2f} ms  "
                    f"cpu {row['cpu_ms'] or 0:6.2f} ms/req  errors {row['non_2xx'] + row['socket_errors']}  "
                    f"other work {row['other_work']:.0%}  busy workers {row['busy_workers']}",
                    flush=True,
                )
        for name, rows in rounds.items():
            points[name].append(summarise(rows))
    return {"payloads": len(kept), "dropped": dropped, "points": points}


def rss_mb(server) -> dict:
    """Each model process's RSS and the whole server's, in MB."""
    return {
        "workers": [round(v / MB, 1) for v in server.worker_rss().values()],
        "total": round(server.total_rss() / MB, 1),
        "processes": server.process_count(),
    }


def measure(args: argparse.Namespace, command: str) -> dict:
    """Start every server, measure every route at every concurrency, stop them; return the results."""
    clients = [int(c) for c in args.clients.split(",") if c.strip()]
    routes = [r.strip() for r in args.routes.split(",") if r.strip()]
    peers = [PEERS[p.strip()] for p in args.peers.split(",") if p.strip()]
    if not args.no_install:
        for peer in peers:
            ensure_venv(peer)
    results: dict = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command,
        "workers": args.workers,
        "clients": clients,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "warmup_s": args.warmup,
        "machine": machine(),
        "servers": {},
        "floor_ms": {},
        "routes": {},
    }
    built = {ROUTES[r][0]: ROUTES[r][1](args.samples) for r in routes}
    for name, items in built.items():
        print(f"floor of {name} ...", flush=True)
        results["floor_ms"][name] = floor_ms(items, args.floor_loops)
    scratch = Path(tempfile.mkdtemp(prefix="vision-peers-wrk-"))
    servers = [OursServer(workers=args.workers), *(PeerServer(p, workers=args.workers) for p in peers)]
    try:
        for server in servers:
            print(f"starting {server.label} on {server.base_url} ({args.workers} workers) ...", flush=True)
            server.start()
            results["servers"][server.name] = {"label": server.label, "ready_s": round(server.ready_s, 2)}
        for server in servers:
            results["servers"][server.name]["rss_ready_mb"] = rss_mb(server)
        # Our trivial route first: the part of every request that is HTTP and gunicorn alone.
        results["routes"][report.BASELINE] = measure_route(
            args, report.BASELINE, payloads.health(), servers[:1], clients, scratch
        )
        for name, items in built.items():
            results["routes"][name] = measure_route(args, name, items, servers, clients, scratch)
        for server in servers:
            results["servers"][server.name]["rss_after_mb"] = rss_mb(server)
    finally:
        for server in servers:
            server.stop()
    results["load_after"] = [round(x, 2) for x in os.getloadavg()]
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and write its results."""
    args = parse_args(argv)
    command = "python -m bench.peers" + (
        ""
        if argv is None and len(sys.argv) == 1
        else " " + shlex.join(sys.argv[1:] if argv is None else argv)
    )
    results = measure(args, command)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    bench = json.loads(args.bench_json.read_text(encoding="utf-8")) if args.bench_json.is_file() else None
    section = report.markdown(results, bench)
    print(section)
    if not args.no_docs:
        report.write_markdown(section, args.out)
        print(f"wrote {args.out} and {args.json}")
    return 0
