"""Where the time goes: py-spy samples the gunicorn workers while wrk drives one endpoint.

    python -m bench.profile /api/predict [--clients 8] [--seconds 10]

Prints the functions with the largest share of samples (inclusive and self) and writes the
collapsed stacks (for flamegraph.pl or speedscope) under bench/results/. Needs py-spy (pip) and wrk (apt),
and the right to ptrace the workers (root, or kernel.yama.ptrace_scope=0).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

from bench import payloads, wrk
from bench.run import RESULTS
from bench.server import GunicornServer, select_known


def summarize(collapsed: Path, top: int = 25) -> str:
    """Rank frames by the share of samples they appear in (inclusive) and end (self)."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f for f in stack.split(";") if f and not f.startswith("process ")]
        for frame in set(frames):
            inclusive[frame] += n
        if frames:
            own[frames[-1]] += n
    if not total:
        return "no samples"
    lines = [f"{total} samples", "", "inclusive  function"]
    lines += [f"{100 * n / total:8.1f}%  {frame}" for frame, n in inclusive.most_common(top)]
    lines += ["", "self       function"]
    lines += [f"{100 * n / total:8.1f}%  {frame}" for frame, n in own.most_common(top)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Profile one endpoint under load."""
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("endpoint", help="e.g. /api/predict (see bench/payloads.py BUILDERS)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--allow-missing", action="store_true", help="go on when another model failed to load"
    )
    parser.add_argument(
        "--unchecked",
        action="store_true",
        help="send every payload even if answered wrong (a model in training)",
    )
    parser.add_argument("--start-timeout", type=float, default=120.0, help="seconds to wait for /ready")
    parser.add_argument(
        "--save-images",
        action="store_true",
        help="keep every image, as production does (the bench default is off)",
    )
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument(
        "--gil",
        action="store_true",
        help="sample only the thread holding the GIL: where Python spends CPU, not where threads wait",
    )
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    built, missing = payloads.build([args.endpoint])
    if missing:
        parser.error(missing[args.endpoint])
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "profile-" + re.sub(r"[^a-z0-9]+", "_", args.endpoint.lower()).strip("_")
    stem += "-saved" if args.save_images else ""
    collapsed = RESULTS / f"{stem}.txt"
    server = GunicornServer(
        workers=args.workers,
        env={"VISION_SAVE_IMAGES": "true" if args.save_images else "false"},
        require_ready=not args.allow_missing,
    )
    server.start(timeout=args.start_timeout)
    with server:
        kept, dropped = select_known(server.base_url, built[args.endpoint])
        if args.unchecked:
            kept = built[args.endpoint]
        if not kept:
            raise SystemExit(f"no payload answered right: {dropped[:3]}")
        script = wrk.write_script(kept, Path(tempfile.mkdtemp(prefix="vision-prof-")), "p")
        wrk.run(server.base_url, script, connections=args.clients, seconds=1)  # warm-up
        result: dict = {}
        load = threading.Thread(
            target=lambda: result.update(
                wrk.run(server.base_url, script, connections=args.clients, seconds=args.seconds + 2)
            )
        )
        load.start()
        record = [
            py_spy,
            "record",
            "--pid",
            str(server.proc.pid),
            "--subprocesses",
            "--duration",
            str(args.seconds),
            "--rate",
            str(args.rate),
            "--nonblocking",
            *(["--gil"] if args.gil else []),
        ]
        subprocess.run(
            [*record, "--format", "raw", "--output", str(collapsed)], check=True, capture_output=True
        )
        load.join()
    print(
        f"{args.endpoint} at {args.clients} clients: {result.get('rps', 0):.0f} req/s, "
        f"p50 {result.get('p50_ms', 0):.2f} ms, p99 {result.get('p99_ms', 0):.2f} ms (while sampled)"
    )
    print(summarize(collapsed))
    print(f"\ncollapsed stacks: {collapsed} (flame graph: flamegraph.pl or speedscope.app reads them)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
