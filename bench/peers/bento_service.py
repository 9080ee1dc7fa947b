"""The digit and doodle routes served by BentoML, with our decoding and models (bench/peers/ours.py).

    bentoml serve bench.peers.bento_service:VisionService --host 127.0.0.1 --port 3000

run from the repository root in bench/peers/.venv-bentoml (`python -m bench.peers` does it). The
API is BentoML's typed one, as its documentation writes a service: a JSON body whose fields are the
method's parameters ({"image": ...} and {"base64_drawing": ...}, as our pages send them), answered
with the dict as JSON. BentoML's defaults stay, except the worker count (PEER_WORKERS, as many as
gunicorn runs) and its access log, off because ours logs no access line either.
"""

from __future__ import annotations

import os

import bentoml

from bench.peers.ours import Route


@bentoml.service(
    workers=int(os.environ.get("PEER_WORKERS", "2")),
    logging={"access": {"enabled": False}},
)
class VisionService:
    """Our two drawing routes, one model each, loaded once per worker process."""

    def __init__(self) -> None:
        self.digits = Route("/api/predict")
        self.doodles = Route("/api/classifier")

    @bentoml.api(route="/api/predict")
    def predict(self, image: str) -> dict:
        """Recognise one handwritten digit."""
        return self.digits.answer(self.digits.decode(image))

    @bentoml.api(route="/api/classifier")
    def classifier(self, base64_drawing: str) -> dict:
        """Classify one doodle."""
        return self.doodles.answer(self.doodles.decode(base64_drawing))
