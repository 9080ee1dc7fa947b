"""`python -m bench.cluster`: two nodes behind nginx on this machine, a node killed, the worker
stopped, a rolling restart, all under locust; prints what held. Loopback only; about 3 minutes."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from bench.cluster.measure import measure
from bench.cluster.report import render
from bench.cluster.scenario import Plan
from bench.cluster.services import Sizes, Unavailable


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Read the command line."""
    plan = Plan()
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__.split(";")[0])
    parser.add_argument("--users", type=int, default=plan.users, help="locust users (default %(default)s)")
    parser.add_argument(
        "--seconds", type=int, default=plan.seconds, help="seconds of load (default %(default)s)"
    )
    parser.add_argument(
        "--kill-at",
        type=float,
        default=plan.kill_at,
        help="seconds into the load node A is killed (default %(default)s)",
    )
    parser.add_argument(
        "--down", type=float, default=plan.down_s, help="seconds node A stays dead (default %(default)s)"
    )
    parser.add_argument(
        "--worker-stop-at",
        type=float,
        default=plan.worker_stop_at,
        help="seconds into the load the Celery worker is stopped (default %(default)s)",
    )
    parser.add_argument(
        "--worker-down",
        type=float,
        default=plan.worker_down_s,
        help="seconds the Celery worker stays stopped (default %(default)s)",
    )
    parser.add_argument("--workers", type=int, default=1, help="gunicorn workers per node (default 1)")
    parser.add_argument("--threads", type=int, default=4, help="gunicorn threads per worker (default 4)")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run once, print the closing note; exit 1 when an invariant failed, 2 when it cannot run here."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    plan = Plan(
        users=args.users,
        spawn_rate=max(1.0, args.users / 4),
        seconds=args.seconds,
        kill_at=args.kill_at,
        down_s=args.down,
        worker_stop_at=args.worker_stop_at,
        worker_down_s=args.worker_down,
    )
    try:
        result = measure(plan, Sizes(workers=args.workers, threads=args.threads))
    except Unavailable as exc:
        print(f"cannot run here: {exc}", file=sys.stderr)
        return 2
    print(render(result))
    if args.json:
        args.json.write_text(json.dumps(result.as_dict(), indent=2, default=str), encoding="utf-8")
    return 1 if result.problems() else 0


if __name__ == "__main__":
    sys.exit(main())
