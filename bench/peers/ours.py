"""What every peer serves: our image decoding and our model classes, so only the serving stack differs.

Imported by the BentoML service and the LitServe app inside their own virtual environments (which
hold this project, installed without extras, beside the peer). A worker sets itself up as ours does
(`app.create_app`: glibc heap threshold, single-threaded OpenCV, Pillow's pixel limit, IPP off per
request), loads the same ONNX files with the same options through `models.registry`, decodes with
`models.image` under the same limits, and answers the same JSON keys as our routes.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from config import load_config
from models.image import decode_value, limit_pillow
from models.registry import build_registry
from models.runtime import ServedModel, limit_heap_retention, set_opencv_ipp, single_threaded_opencv

ROOT = Path(__file__).resolve().parents[2]
# What the bench's payloads send to each route: (model, JSON field, default options), as our routes read them.
ROUTES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "/api/predict": ("numbers", "image", {"top": 0}),
    "/api/classifier": ("doodles", "base64_drawing", {"top": 3}),
}
# The line the harness waits for, once per process that has loaded and warmed its models.
READY_LINE = "peer models ready in pid {pid}"

log = logging.getLogger(__name__)


class Route:
    """One route's model and limits, loaded and warmed in the calling process."""

    def __init__(self, path: str):
        name, self.field, self.options = ROUTES[path]
        settings = load_config(environ={})  # production defaults, whatever VISION_* says here
        limit_heap_retention()
        single_threaded_opencv()
        limit_pillow(settings["MAX_IMAGE_PIXELS"])
        registry = build_registry(
            {name: settings["MODELS"][name]}, root=ROOT, threads=settings["ONNX_THREADS"]
        )
        if name not in registry.models:
            raise RuntimeError(f"model {name} did not load: {registry.failures.get(name)}")
        self.name = name
        self.model: ServedModel = registry.models[name]
        self.limits = {
            "max_bytes": settings["MAX_IMAGE_BYTES"],
            "max_pixels": settings["MAX_IMAGE_PIXELS"],
        }
        # Our model answers carry the classifier's name as the route adds it (blueprints/classifier.py).
        self.extra = {"model": name} if path == "/api/classifier" else {}
        print(READY_LINE.format(pid=os.getpid()), flush=True)

    def decode(self, value: Any):
        """Decode the request's image field as our image input does."""
        set_opencv_ipp(False)  # per thread, as our app sets it before every request
        return decode_value(value, self.field, **self.limits)

    def answer(self, image) -> dict:
        """Run the model on a decoded image and return the same JSON keys as our route."""
        return {**self.model(image, **self.options), **self.extra}
