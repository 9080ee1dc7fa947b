"""The digit and doodle routes served by LitServe, with our decoding and models (bench/peers/ours.py).

    python -m bench.peers.litserve_app --port 8000 --workers 2

run from the repository root in bench/peers/.venv-litserve (`python -m bench.peers` does it). One
`LitAPI` per route, as LitServe's documentation serves several models: each gets `--workers`
inference processes, and `--workers` uvicorn API processes take the HTTP side for both. ZeroMQ
queues (`fast_queue`) as its documentation advises above 100 requests/s; no access log, as ours.
"""

from __future__ import annotations

import argparse

import litserve as ls

from bench.peers.ours import Route


class RouteAPI(ls.LitAPI):
    """One of our routes: decode_request decodes the image, predict runs the model."""

    def setup(self, device: str) -> None:
        """Load and warm the route's model in this inference worker."""
        self.route = Route(self.api_path)

    def decode_request(self, request: dict, **kwargs):
        """Decode the JSON body's image field as our image input does."""
        return self.route.decode(request[self.route.field])

    def predict(self, image, **kwargs) -> dict:
        """Answer as our route does."""
        return self.route.answer(image)

    def encode_response(self, output: dict, **kwargs) -> dict:
        """Send the answer as it is (LitServe encodes it as JSON)."""
        return output


def main(argv: list[str] | None = None) -> None:
    """Serve both routes until stopped."""
    parser = argparse.ArgumentParser(prog="python -m bench.peers.litserve_app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=2, help="inference and API processes (default 2)")
    parser.add_argument("--no-fast-queue", action="store_true", help="multiprocessing queues, not ZeroMQ")
    args = parser.parse_args(argv)
    apis = [RouteAPI(api_path="/api/predict"), RouteAPI(api_path="/api/classifier")]
    server = ls.LitServer(
        apis, accelerator="cpu", workers_per_device=args.workers, fast_queue=not args.no_fast_queue
    )
    server.run(
        host=args.host,
        port=args.port,
        num_api_servers=args.workers,
        log_level="warning",
        generate_client_file=False,
        access_log=False,
    )


if __name__ == "__main__":
    main()
