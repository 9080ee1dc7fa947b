"""The tables of `python -m bench.peers`: against the peers, the routes' own overhead, and the tails.

    python -m bench.peers.report [bench/results/peers.json] [--write docs/PERFORMANCE.md]

prints (or writes into the document, between its markers) the tables of a saved run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.payloads import ROOT

RESULTS = ROOT / "bench" / "results"
START = "<!-- bench-peers:start (written by `python -m bench.peers`; edit outside these markers) -->"
END = "<!-- bench-peers:end -->"
BASELINE = "/health"
OURS = "ours"
GOAL_CLIENTS = 8
# Issue 18: at least this multiple of the best peer's throughput at 8 clients, with a lower p99.
GOAL_RATIO = 2.0
# The route's own overhead (CPU per request - /health's - its floor), for digits and doodles.
GOAL_OVERHEAD_MS = 0.15
# Tails at 8 clients: p99 <= 3 x p50, and p99 <= 2 x (CPU per request x clients / cores).
GOAL_TAIL_RATIO = 3.0
GOAL_QUEUE_FACTOR = 2.0


def point(results: dict, route: str, server: str, clients: int) -> dict | None:
    """One summarised point (medians over the rounds), or None."""
    for row in results["routes"].get(route, {}).get("points", {}).get(server, []):
        if row["clients"] == clients:
            return row
    return None


def model_routes(results: dict) -> list[str]:
    """The measured routes that serve a model (every route but the baseline)."""
    return [r for r in results["routes"] if r != BASELINE]


def peers(results: dict) -> list[str]:
    """The peers measured."""
    return [s for s in results["servers"] if s != OURS]


def label(results: dict, server: str) -> str:
    """A server's name with its version."""
    return results["servers"].get(server, {}).get("label", server)


def goal_rows(results: dict) -> list[tuple[str, str, str, str, bool | None]]:
    """Per model route at 8 clients: ours, the best peer, the ratio, both p99s, and whether the goal is met."""
    rows = []
    for route in model_routes(results):
        ours = point(results, route, OURS, GOAL_CLIENTS)
        others = [(p, point(results, route, p, GOAL_CLIENTS)) for p in peers(results)]
        others = [(p, row) for p, row in others if row and row["rps"]]
        if not ours or not ours["rps"] or not others:
            rows.append((route, "not measured", "", "", None))
            continue
        best, row = max(others, key=lambda item: item[1]["rps"])
        ratio = ours["rps"] / row["rps"]
        met = ratio >= GOAL_RATIO and ours["p99_ms"] < row["p99_ms"]
        rows.append(
            (
                route,
                f"{ours['rps']:.0f} vs {row['rps']:.0f} ({label(results, best).split()[0]})",
                f"{ratio:.2f}x",
                f"{ours['p99_ms']:.1f} vs {row['p99_ms']:.1f} ms",
                met,
            )
        )
    return rows


def overhead_rows(results: dict) -> list[tuple[str, float, float, float, float]]:
    """Per model route: our CPU per request at 8 clients, /health's, the floor, and what is left."""
    base = point(results, BASELINE, OURS, GOAL_CLIENTS)
    rows = []
    for route in model_routes(results):
        ours = point(results, route, OURS, GOAL_CLIENTS)
        floor = results.get("floor_ms", {}).get(route, {}).get("total")
        if not (base and ours and base.get("cpu_ms") and ours.get("cpu_ms") and floor):
            continue
        rows.append((route, ours["cpu_ms"], base["cpu_ms"], floor, ours["cpu_ms"] - base["cpu_ms"] - floor))
    return rows


def tail_rows(results: dict, bench: dict | None = None) -> list[tuple[str, str, dict, float | None]]:
    """Every route at 8 clients (each server here, then `make bench`'s other routes): its point and bound."""
    cores = results["machine"]["cores"]
    rows = []
    for route in results["routes"]:
        for server in results["routes"][route]["points"]:
            row = point(results, route, server, GOAL_CLIENTS)
            if row and row["rps"] and row["p50_ms"] is not None:
                rows.append((route, label(results, server), row, queue_bound(row, cores)))
    if bench:
        for route, data in bench.get("endpoints", {}).items():
            if route in results["routes"]:
                continue
            row = next((p for p in data["points"] if p["clients"] == GOAL_CLIENTS), None)
            if row and row["requests"]:
                where = f"ours, `make bench` {bench.get('date', '')}"
                rows.append((route, where, row, queue_bound(row, bench["machine"]["cores"])))
    return rows


def queue_bound(row: dict, cores: int) -> float | None:
    """2 x (CPU per request x clients / cores): the p99 a fair queue on these cores stays under."""
    if not row.get("cpu_ms"):
        return None
    return GOAL_QUEUE_FACTOR * row["cpu_ms"] * row["clients"] / cores


def other_work_line(results: dict) -> list[str]:
    """A line saying how much of the cores other work took during the measured points, when recorded."""
    shares = sorted(
        row["other_work"]
        for data in results["routes"].values()
        for points in data["points"].values()
        for p in points
        for row in p["rounds"]
        if row.get("other_work") is not None
    )
    if not shares:
        return []
    median = shares[len(shares) // 2]
    busy = sum(share > 0.1 for share in shares)
    return [
        f"- Other work on the machine during the points: median {median:.0%} of the cores, at most "
        f"{shares[-1]:.0%}; {busy} of {len(shares)} points above 10%."
    ]


def idle_worker_line(results: dict) -> list[str]:
    """A line counting, per server, the rounds where a worker stayed idle though clients >= workers."""
    counts = {}
    for route, data in results["routes"].items():
        for server, points in data["points"].items():
            for p in points:
                flags = [b for b in p.get("busy_workers", []) if b is not None]
                if route == BASELINE or p["clients"] < results["workers"] or not flags:
                    continue
                idle, total = counts.get(server, (0, 0))
                counts[server] = (idle + sum(b < results["workers"] for b in flags), total + len(flags))
    if not counts:
        return []
    return [
        f"- Rounds of a model route with a worker left idle (every connection on the other one), at "
        f"{results['workers']} or more clients: "
        + ", ".join(
            f"{label(results, s).split()[0]} {idle} of {total}" for s, (idle, total) in counts.items()
        )
        + "."
    ]


def yes_no(met: bool | None) -> str:
    """A table cell for a goal."""
    return "-" if met is None else ("yes" if met else "**no**")


def markdown(results: dict, bench: dict | None = None) -> str:
    """The generated section of docs/PERFORMANCE.md."""
    m = results["machine"]
    lines = [
        START,
        "",
        f"Measured {results['date']} with `{results['command']}`: {results['rounds']} interleaved rounds of "
        f"{results['duration_s']:g} s per point (ours, then each peer, then ours again...) after a "
        f"{results['warmup_s']:g} s warm-up per server and route; wrk with one thread on 127.0.0.1; "
        f"{results['workers']} worker processes for each server; each figure is the median of the rounds.",
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; Python {m['python']}; load average "
        f"before the run {', '.join(map(str, m['load_before']))}, after "
        f"{', '.join(map(str, results.get('load_after', [])))}.",
        "- Servers: " + "; ".join(label(results, s) for s in results["servers"]) + ".",
        *other_work_line(results),
        *idle_worker_line(results),
        "",
        f"### Goal: at least {GOAL_RATIO:g}x the best peer's throughput at {GOAL_CLIENTS} clients, with a lower p99",
        "",
        "| route | req/s, ours vs best peer | ratio | p99, ours vs that peer | met |",
        "|---|---:|---:|---:|:---:|",
    ]
    lines += [f"| `{r}` | {a} | {b} | {c} | {yes_no(met)} |" for r, a, b, c, met in goal_rows(results)]
    lines += [
        "",
        "### Every point",
        "",
        "req/s is the median of the rounds, with the slowest and fastest round beside it. Server CPU = user + "
        "system time of every process of the server (master, workers, queues, API servers) per request. "
        "Errors = non-2xx answers plus socket errors over all rounds (should be 0). Other work = the share "
        "of the cores taken meanwhile by processes that are neither the servers, wrk nor the bench (others' "
        "work on a shared machine; 0% on a quiet one), median of the rounds. Busy workers = in each round, "
        "the model processes that did at least a tenth of the server's work.",
        "",
        "| route | server | clients | req/s | (rounds) | p50 ms | p99 ms | server CPU ms/req | errors | other work "
        "| busy workers |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for route, data in results["routes"].items():
        for server, rows in data["points"].items():
            for p in rows:
                low, high = p["rps_range"]
                cpu = "" if p.get("cpu_ms") is None else f"{p['cpu_ms']:.2f}"
                other = "" if p.get("other_work") is None else f"{p['other_work']:.0%}"
                lines.append(
                    f"| `{route}` | {label(results, server).split(' (')[0]} | {p['clients']} | {p['rps'] or 0:.0f} | "
                    f"{low:.0f}-{high:.0f} | {p['p50_ms'] or 0:.1f} | {p['p99_ms'] or 0:.1f} | {cpu} | {p['errors']} | "
                    f"{other} | {','.join('' if b is None else str(b) for b in p.get('busy_workers', []))} |"
                )
    lines += [
        "",
        "### Memory",
        "",
        "RSS of each process that holds a model (ours: every gunicorn worker, with every model the service "
        "serves loaded; BentoML: each service worker, both drawing models; LitServe: each inference worker, "
        "one model) and of all the server's processes together.",
        "",
        "| server | processes | RSS per model process at ready | after the run | all processes after |",
        "|---|---:|---|---|---:|",
    ]
    for info in results["servers"].values():
        ready, after = info.get("rss_ready_mb", {}), info.get("rss_after_mb", {})
        lines.append(
            f"| {info['label']} | {after.get('processes', ready.get('processes', ''))} | "
            f"{', '.join(f'{v:.0f}' for v in ready.get('workers', []))} MB | "
            f"{', '.join(f'{v:.0f}' for v in after.get('workers', []))} MB | {after.get('total', 0):.0f} MB |"
        )
    lines += [
        "",
        f"### The routes' own overhead (goal <= {GOAL_OVERHEAD_MS:g} ms)",
        "",
        f"Our server CPU per request at {GOAL_CLIENTS} clients, less `{BASELINE}`'s (HTTP and gunicorn) and "
        "less the floor: PNG decode (libspng), grey, the model's preprocessing and ONNX inference, each "
        "timed alone in a warm loop (bench/peers/floor.py, as `python -m bench.digits`). What is left is "
        "Flask, parsing, JSON, logging and metrics, and whatever a request costs more in a loaded server "
        "than in a warm loop.",
        "",
        "| route | server CPU ms/req | `/health` | floor | own overhead | met |",
        "|---|---:|---:|---:|---:|:---:|",
    ]
    for route, cpu, base, floor, own in overhead_rows(results):
        lines.append(
            f"| `{route}` | {cpu:.2f} | {base:.2f} | {floor:.2f} | {own:.2f} | {yes_no(own <= GOAL_OVERHEAD_MS)} |"
        )
    lines += [
        "",
        f"### Tails at {GOAL_CLIENTS} clients",
        "",
        f"Goals: p99 <= {GOAL_TAIL_RATIO:g} x p50, and p99 <= {GOAL_QUEUE_FACTOR:g} x (server CPU per request "
        f"x {GOAL_CLIENTS} clients / cores), the queueing bound."
        + (" Routes not measured here come from `make bench`'s last results." if bench else ""),
        "",
        "| route | server | p50 ms | p99 ms | p99 / p50 | met | queueing bound ms | met |",
        "|---|---|---:|---:|---:|:---:|---:|:---:|",
    ]
    for route, where, row, bound in tail_rows(results, bench):
        ratio = row["p99_ms"] / row["p50_ms"] if row["p50_ms"] else None
        lines.append(
            f"| `{route}` | {where.split(' (')[0]} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} | "
            f"{'' if ratio is None else f'{ratio:.1f}'} | "
            f"{yes_no(None if ratio is None else ratio <= GOAL_TAIL_RATIO)} | "
            f"{'' if bound is None else f'{bound:.1f}'} | "
            f"{yes_no(None if bound is None else row['p99_ms'] <= bound)} |"
        )
    dropped = {
        f"{route} ({server})": why
        for route, data in results["routes"].items()
        for server, why in data.get("dropped", {}).items()
    }
    if dropped:
        lines += [
            "",
            "Payloads left out because a server answered them wrong at rest (all servers get the same rest):",
            "",
        ]
        lines += [
            f"- `{k}`: {len(v)} ({'; '.join(v[:2])}{'...' if len(v) > 2 else ''})" for k, v in dropped.items()
        ]
    lines += ["", END]
    return "\n".join(lines) + "\n"


def write_markdown(section: str, path: Path) -> None:
    """Replace the generated section in the document, or add it at the end when it has none yet."""
    text = path.read_text(encoding="utf-8") if path.is_file() else "# Performance\n"
    if START in text and END in text:
        head, _, rest = text.partition(START)
        _, _, tail = rest.partition(END)
        text = head + section.rstrip("\n") + tail
    else:
        text = text.rstrip("\n") + "\n\n## Against BentoML and LitServe\n\n" + section
    path.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Print the tables of a saved run, or write them into a document."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.peers.report", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("json", nargs="?", type=Path, default=RESULTS / "peers.json")
    parser.add_argument("--bench-json", type=Path, default=RESULTS / "latest.json")
    parser.add_argument(
        "--write", type=Path, help="replace the section in this document (docs/PERFORMANCE.md)"
    )
    args = parser.parse_args(argv)
    results = json.loads(args.json.read_text(encoding="utf-8"))
    bench = json.loads(args.bench_json.read_text(encoding="utf-8")) if args.bench_json.is_file() else None
    section = markdown(results, bench)
    if args.write:
        write_markdown(section, args.write)
        print(f"wrote {args.write}")
    else:
        print(section, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
