"""The floor of a model route: the parts no server can skip, each timed alone in its own warm loop.

As `python -m bench.digits` times them for the digits (PNG decode by libspng, grey, the model's
preprocessing, ONNX inference), here for any route's payloads and model: their sum is what a request
costs with no HTTP, framework, parsing or answer around it.
"""

from __future__ import annotations

import base64
import json

import pyspng

from bench.digits import cpu_us
from bench.payloads import ROOT, Payload

# The JSON field each route's payloads carry their image in, and the model that serves the route.
FIELDS = {"/api/predict": ("image", "numbers"), "/api/classifier": ("base64_drawing", "doodles")}


def png_bytes(payload: Payload) -> bytes:
    """The PNG inside a payload's data URL."""
    field, _ = FIELDS[payload.path]
    return base64.b64decode(json.loads(payload.body)[field].split(",", 1)[1])


def floor_ms(payloads: list[Payload], n: int = 500) -> dict[str, float]:
    """Time decode, pixels, preprocess and predict alone on these payloads; return each and the sum, in ms."""
    from config import load_config
    from models.image import InputImage
    from models.registry import build_registry
    from models.runtime import set_opencv_ipp, single_threaded_opencv

    single_threaded_opencv()  # as served
    set_opencv_ipp(False)
    _, name = FIELDS[payloads[0].path]
    settings = load_config(environ={})
    model = build_registry({name: settings["MODELS"][name]}, root=ROOT).models[name]
    datas = [png_bytes(p) for p in payloads]
    decoded = [pyspng.load(d) for d in datas]
    pixels = [model.pixels(InputImage(p, "PNG", "bench", order="RGB")) for p in decoded]
    tensors = [model.preprocess(p)[0] for p in pixels]
    parts = {
        "decode": cpu_us(pyspng.load, datas, n),
        "pixels": cpu_us(lambda p: model.pixels(InputImage(p, "PNG", "bench", order="RGB")), decoded, n),
        "preprocess": cpu_us(model.preprocess, pixels, n),
        "predict": cpu_us(model.predict, tensors, n),
    }
    out = {k: round(v / 1000, 3) for k, v in parts.items()}
    out["total"] = round(sum(parts.values()) / 1000, 3)
    return out
