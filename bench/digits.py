"""Where a /api/predict request's CPU goes, in-process (no sockets, no client).

    python -m bench.digits [-n 3000]

Two tables, on the bench's digit payloads (400x400 canvas uploads and the page's 140 px export),
CPU time per call (`time.process_time`), one thread:

1. the route taken apart in a loop of WSGI calls: `/health` for comparison, the POST with the
   model and the image stubbed (Flask, instrumentation, JSON), then with the real image input,
   then the whole request, and the whole request again with OpenCV's IPP on (the baseline);
2. the parts timed alone, each in its own loop (warm caches, IPP off as served): PNG decode by
   libspng beside OpenCV's libpng (the baseline it replaced), grey, `to_mnist` and ONNX inference.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import pyspng

from bench import payloads
from bench.payloads import PREDICT_PAGE, Payload

PAYLOADS = {"400x400 upload": "/api/predict", "page's 140 px export": PREDICT_PAGE}


def cpu_us(fn: Callable[[Any], Any], items: list, n: int) -> float:
    """Return the mean CPU microseconds of fn over n calls cycling through items (after a warm-up)."""
    for item in items[:20]:
        fn(item)
    start = time.process_time()
    for i in range(n):
        fn(items[i % len(items)])
    return (time.process_time() - start) / n * 1e6


def wsgi_caller(app) -> Callable[[Payload], bytes]:
    """Return a function that sends one payload straight to the WSGI app and returns the body."""

    def call(p: Payload) -> bytes:
        body = p.body or b""
        environ = {
            "REQUEST_METHOD": p.method,
            "PATH_INFO": p.path,
            "SCRIPT_NAME": "",
            "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "HTTP_HOST": "127.0.0.1",
            "REMOTE_ADDR": "127.0.0.1",
            "CONTENT_TYPE": p.content_type or "",
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
        result = app(environ, lambda status, headers, exc_info=None: None)
        try:
            return b"".join(result)
        finally:
            getattr(result, "close", lambda: None)()

    return call


def stub_model(self, image, **options) -> dict:
    """Answer without the model, after taking its grey pixels (counted with the image's decoding)."""
    self.pixels(image)
    return {"prediction": 0, "certainty": 99.0}


def route_table(n: int) -> list[str]:
    """Take the digit route apart: stub the model, then the image input too."""
    from app import create_app
    from blueprints import numbers as route
    from models.numbers import NumbersModel

    app = create_app({"SAVE_IMAGES": False})
    call = wsgi_caller(app)
    # The baseline for the IPP switch: the same app with OpenCV's IPP on (its default before).
    call_ipp = wsgi_caller(create_app({"SAVE_IMAGES": False, "OPENCV_IPP": True}))
    health = payloads.health()
    rows = ["| in-process WSGI, CPU per request | " + " | ".join(PAYLOADS) + " |", "|---|---:|---:|"]
    cells: dict[str, list[str]] = {}
    for endpoint in PAYLOADS.values():
        digits = payloads.BUILDERS[endpoint](50)
        whole = cpu_us(call, digits, n)
        whole_ipp = cpu_us(call_ipp, digits, n)
        real_call, real_load = NumbersModel.__call__, route.load_image
        try:
            NumbersModel.__call__ = stub_model
            no_model = cpu_us(call, digits, n)
            with app.test_request_context(
                "/api/predict", method="POST", data=digits[0].body, content_type=digits[0].content_type
            ):
                image = real_load()
            image.gray()  # cached on the image: the stub below hands it over decoded and grey
            route.load_image = lambda *a, _image=image, **kw: _image
            bare = cpu_us(call, digits, n)
        finally:
            NumbersModel.__call__, route.load_image = real_call, real_load
        base = cpu_us(call, health, n)
        for label, value in (
            ("`/health`, for comparison", base),
            ("POST with image and model stubbed (Flask, instrumentation, JSON)", bare),
            ("+ finding and decoding the image (`load_image`, grey)", no_model - bare),
            ("+ the model: `to_mnist`, ONNX, answer", whole - no_model),
            ("whole request", whole),
            ("whole request with OpenCV's IPP on (baseline: `OPENCV_IPP=true`)", whole_ipp),
        ):
            cells.setdefault(label, []).append(f"{value / 1000:.2f} ms")
    rows += [f"| {label} | " + " | ".join(values) + " |" for label, values in cells.items()]
    return rows


def parts_table(n: int) -> list[str]:
    """Time decode (libspng beside OpenCV), grey, to_mnist and ONNX alone, each in its own loop."""
    from models.image import InputImage
    from models.numbers import NumbersModel, to_mnist
    from models.runtime import set_opencv_ipp, single_threaded_opencv

    single_threaded_opencv()  # as served
    set_opencv_ipp(False)
    model = NumbersModel("numbers", payloads.ROOT / "models" / "numbers.onnx")
    rows = ["| part, timed alone | " + " | ".join(PAYLOADS) + " |", "|---|---:|---:|"]
    cells: dict[str, list[str]] = {}
    for endpoint in PAYLOADS.values():
        datas = [
            base64.b64decode(json.loads(p.body)["image"].split(",", 1)[1])
            for p in payloads.BUILDERS[endpoint](50)
        ]
        pixels = [pyspng.load(d) for d in datas]
        grays = [InputImage(p, "PNG", "bench", order="RGB").gray() for p in pixels]
        tensors = [model.preprocess(g)[0] for g in grays]
        for label, fn, items in (
            ("PNG decode, libspng (served)", pyspng.load, datas),
            (
                "PNG decode, OpenCV's libpng (baseline)",
                lambda d: cv2.imdecode(np.frombuffer(d, np.uint8), cv2.IMREAD_UNCHANGED),
                datas,
            ),
            ("grey + alpha on white", lambda p: InputImage(p, "PNG", "bench", order="RGB").gray(), pixels),
            ("`to_mnist`", to_mnist, grays),
            ("ONNX inference (one thread)", model.predict, tensors),
        ):
            cells.setdefault(label, []).append(f"{cpu_us(fn, items, n) / 1000:.2f} ms")
    rows += [f"| {label} | " + " | ".join(values) + " |" for label, values in cells.items()]
    return rows


def main(argv: list[str] | None = None) -> int:
    """Print both tables as Markdown."""
    parser = argparse.ArgumentParser(prog="python -m bench.digits", description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=3000, help="calls per measurement (default 3000)")
    args = parser.parse_args(argv)
    logging.disable(logging.INFO)  # the access log line costs every route the same; keep stderr quiet
    try:
        print("\n".join(route_table(args.n)))
    finally:
        logging.disable(logging.NOTSET)
    print()
    print("\n".join(parts_table(args.n)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
