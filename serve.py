"""Cross-platform production entry point on waitress (runs on Windows, where gunicorn does not).

`vision-serve` or `python serve.py`: serves create_app() on HOST:PORT from the settings (config.py);
--host and --port override those two settings, checked like any other.
"""

from __future__ import annotations

import argparse
import logging
import os

# A browser opens up to 6 connections to one host, and the gallery page uses them all at once
# (its list, then 24 thumbnails). waitress's default of 4 threads made 2 of every 6 wait, and
# waitress warns on every wait; 8 threads serve one such page with none waiting and leave 2 for
# another tab (the tracker, the dashboard's polling). Model requests are CPU-bound but ONNX
# Runtime releases the GIL (one intra-op thread per model), so extra threads only share the cores.
THREADS = 8


class SaturationOnly(logging.Filter):
    """Pass waitress's "Task queue depth is N" warning only when N reaches the thread count."""

    def __init__(self, threads: int):
        super().__init__("waitress.queue")
        self.threads = threads

    def filter(self, record: logging.LogRecord) -> bool:
        # waitress warns whenever one request waits for a thread, even for a millisecond: a burst
        # of thumbnails from one page is not saturation. A backlog as long as the pool means every
        # new request waits for a whole round of requests: that one is worth a warning.
        depth = record.args[0] if isinstance(record.args, tuple) and record.args else None
        return not isinstance(depth, int) or depth >= self.threads


def main(argv: list[str] | None = None) -> None:
    """Serve the app with waitress."""
    from waitress import serve

    from app import create_app

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", help="address to bind (default: HOST setting)")
    parser.add_argument("--port", type=int, help="port (default: PORT setting)")
    parser.add_argument(
        "--threads",
        type=int,
        default=int(os.environ.get("WAITRESS_THREADS", THREADS)),
        help=f"request threads (default: WAITRESS_THREADS, else {THREADS})",
    )
    args = parser.parse_args(argv)
    given = {"HOST": args.host, "PORT": args.port}
    app = create_app({name: value for name, value in given.items() if value is not None})
    host, port = app.config["HOST"], app.config["PORT"]
    logging.getLogger("waitress.queue").addFilter(SaturationOnly(args.threads))
    logging.getLogger(__name__).info(
        "serving on http://%s:%d with waitress, %d threads", host, port, args.threads
    )
    serve(app, host=host, port=port, threads=args.threads, ident="vision")


if __name__ == "__main__":
    main()
