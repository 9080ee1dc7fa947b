"""Cross-platform production entry point on waitress (runs on Windows, where gunicorn does not).

`vision-serve` or `python serve.py`: serves create_app() on HOST:PORT from the settings (config.py);
--host and --port override those two settings, checked like any other.
"""

from __future__ import annotations

import argparse
import logging
import os


def main(argv: list[str] | None = None) -> None:
    """Serve the app with waitress."""
    from waitress import serve

    from app import create_app

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", help="address to bind (default: HOST setting)")
    parser.add_argument("--port", type=int, help="port (default: PORT setting)")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("WAITRESS_THREADS", "4")))
    args = parser.parse_args(argv)
    given = {"HOST": args.host, "PORT": args.port}
    app = create_app({name: value for name, value in given.items() if value is not None})
    host, port = app.config["HOST"], app.config["PORT"]
    logging.getLogger(__name__).info("serving on http://%s:%d with waitress", host, port)
    serve(app, host=host, port=port, threads=args.threads, ident="vision")


if __name__ == "__main__":
    main()
