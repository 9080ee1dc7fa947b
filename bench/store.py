"""Measure the image store in-process: what keeping an image costs a prediction, by part, and in all.

    python -m bench.store [-n 500] [--requests 1000]

On a temporary SQLite store (the same folder as the scratch store of `bench.run --save-images`):

1. the request path and the background writer: the time `submit()` adds to a prediction (p50/p99),
   the writer's throughput, a synchronous `save()` (an upload), and the thumbnail of a 280x280
   canvas and of a 4000x3000 JPEG photo made from the file;
2. CPU per kept image by part (`time.thread_time` in the thread that does each part), for the
   bench's digit payloads (bench/payloads.py: canvas uploads, the page's 140 px export), four ways:
   as before group commit (one commit per image, the thumbnail made later from the file), one image
   at a time now (an idle server), a queue kept together (a saturated one: up to 32 per commit), and
   the same with an fsync a file instead of one syncfs a batch (`STORE_SYNC=file`);
3. in-process WSGI CPU per `/api/predict` request with SAVE_IMAGES off and on (every thread of the
   process, the store drained and every thumbnail made; the configurations take turns, 3 rounds): `off / on` is the throughput share keeping
   images leaves a CPU-bound server. gunicorn and HTTP add the same to both sides (about 0.5 ms a
   request here), so the served share is higher than this one.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import statistics
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench import payloads
from models.image import InputImage, decode_value
from store import ImageStore, NewImage, durable, saving
from store.thumbnails import make_thumbnail

PAYLOADS = {"canvas upload (/api/predict)": "/api/predict", "page's 140 px export": payloads.PREDICT_PAGE}
WAYS = {
    "before: one commit each, thumbnail later from the file": "before",
    "now, one at a time (idle server)": "alone",
    "now, queued (saturated server, up to 32 per commit)": "queued",
    "the same, an fsync a file (`STORE_SYNC=file`) instead of one syncfs a batch": "queued-fsync",
}
PARTS = [
    ("`submit()`: journal + queue (request thread)", "submit"),
    ("hash, EXIF, row values, metrics", "other"),
    ("file write", "file"),
    ("flush to disk (fsync, or syncfs a batch)", "fsync"),
    ("row: insert, renames, commit", "transaction"),
    ("thumbnail from the request's pixels", "thumb_now"),
    ("thumbnail later: read, decode, shrink, JPEG, 2 row updates", "thumb_later"),
]


def percentile(values: list[float], q: float) -> float:
    """Return the q-th percentile (0-100) of values."""
    return float(np.percentile(values, q))


def encoded(img: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **options)
    return buf.getvalue()


def digit_images(endpoint: str) -> list[InputImage]:
    """Decode the bench's digit payloads of an endpoint as the route does."""
    return [
        decode_value(json.loads(p.body)["image"], "image", max_bytes=10**7, max_pixels=10**8)
        for p in payloads.BUILDERS[endpoint](50)
    ]


class PartTimer:
    """Add up the CPU time (of the calling thread) spent in wrapped callables, by part."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = defaultdict(float)
        self._lock = threading.Lock()

    def wrap(self, fn: Callable[..., Any], part: str) -> Callable[..., Any]:
        """Return fn, timed into `part`."""

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent = (time.thread_time() - start) * 1e3
                with self._lock:
                    self.ms[part] += spent

        return timed


def kept_cost(images: list[InputImage], way: str, n: int, folder: Path) -> dict[str, float]:
    """Keep n images through submit() one way; return CPU ms per image by part (and "total")."""
    store = ImageStore(
        f"sqlite:///{folder / f'{way}.db'}",
        folder / way,
        queue_size=n + 1,
        sync_mode=durable.FILE if way.endswith("-fsync") else durable.BATCH,
    )
    store.ensure_schema()
    store.start_thumbnails(workers=1)
    timer = PartTimer()
    if way == "before":
        store.writer._hold = lambda image: None  # no pixels for the thumbnail: made later, from the file
    store.writer.save = timer.wrap(store.writer.save, "writer")
    store._write_file = timer.wrap(store._write_file, "file")
    store._stage_thumbnail = timer.wrap(store._stage_thumbnail, "thumb_now")
    store._commit = timer.wrap(store._commit, "commit")
    store.thumbnails.local.handle = timer.wrap(store.thumbnails.local.handle, "thumb_later")
    real_sync = saving._sync
    saving._sync = timer.wrap(real_sync, "fsync")
    try:
        submit = timer.wrap(store.submit, "submit")
        for i in range(n):
            submit(
                images[i % len(images)], endpoint="predict", model="numbers", prediction="1", confidence=0.9
            )
            if not way.startswith("queued"):
                store.flush(60)
        store.flush(600)
        store.thumbnails.drain(600)
    finally:
        saving._sync = real_sync
        store.close()
    parts = {part: spent / n for part, spent in timer.ms.items()}
    parts["transaction"] = parts.get("commit", 0) - parts.get("fsync", 0)
    parts["other"] = (
        parts.get("writer", 0) - parts.get("file", 0) - parts.get("thumb_now", 0) - parts.get("commit", 0)
    )
    parts["total"] = sum(parts.get(key, 0) for _, key in PARTS)
    return parts


def parts_table(n: int) -> list[str]:
    """CPU per kept image by part, for each payload and way, as Markdown."""
    from models.runtime import single_threaded_opencv

    single_threaded_opencv()  # as served
    columns = [(name, way) for name in PAYLOADS for way in WAYS.values()]
    results: dict[tuple[str, str], dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, endpoint in PAYLOADS.items():
            images = digit_images(endpoint)
            for way in WAYS.values():
                results[name, way] = kept_cost(images, way, n, Path(folder))
    short = {v: k.split(":")[0].split(",")[0] if v == "before" else v for k, v in WAYS.items()}
    head = "| CPU ms per kept image | " + " | ".join(f"{name}: {short[way]}" for name, way in columns) + " |"
    rows = [head, "|---|" + "---:|" * len(columns)]
    for label, key in [*PARTS, ("**total**", "total")]:
        rows.append(f"| {label} | " + " | ".join(f"{results[c].get(key, 0):.3f}" for c in columns) + " |")
    rows.append("")
    rows += [f"- {short[way]}: {label}" for label, way in WAYS.items()]
    return rows


ROUNDS = 3


def request_table(n: int, rounds: int = ROUNDS) -> list[str]:
    """In-process CPU per /api/predict request, images kept or not (all threads, store drained).

    Every configuration has its own app; they take turns, `rounds` times, n requests a turn
    per payload, and each cell is the median of its turns: measured one after another, the
    configurations met different states of the machine and the spread hid the difference.
    """
    from app import create_app
    from bench.digits import wsgi_caller

    rows = [
        "| in-process WSGI, process CPU ms per request | " + " | ".join(PAYLOADS) + " |",
        "|---|" + "---:|" * len(PAYLOADS),
    ]
    configs = {
        "SAVE_IMAGES off": {"SAVE_IMAGES": False},
        "SAVE_IMAGES on, as before (one commit each, thumbnail later)": {"SAVE_IMAGES": True, "before": True},
        "SAVE_IMAGES on": {"SAVE_IMAGES": True},
        "SAVE_IMAGES on, an fsync a file (STORE_SYNC=file)": {"SAVE_IMAGES": True, "STORE_SYNC": "file"},
    }
    turns: dict[tuple[str, str], list[float]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as folder:
        apps = {}
        for label, config in configs.items():
            sub = Path(tempfile.mkdtemp(dir=folder))
            app = create_app(
                {
                    "SAVE_IMAGES": config["SAVE_IMAGES"],
                    "IMAGE_DIR": str(sub / "images"),
                    "DATABASE_URL": f"sqlite:///{sub / 'images.db'}",
                    "STORE_QUEUE_SIZE": n + 1,
                    "STORE_SYNC": config.get("STORE_SYNC", "batch"),
                }
            )
            if config.get("before"):
                app.extensions["store"].writer._hold = lambda image: None
            apps[label] = (app, wsgi_caller(app))
        bodies = {endpoint: payloads.BUILDERS[endpoint](50) for endpoint in PAYLOADS.values()}
        for _, call in apps.values():
            for digits in bodies.values():
                for p in digits[:20]:
                    call(p)
        for _ in range(rounds):
            for label, (app, call) in apps.items():
                store = app.extensions["store"]
                for endpoint, digits in bodies.items():
                    store.flush(600)
                    store.thumbnails.drain(600)
                    start = time.process_time()
                    for i in range(n):
                        call(digits[i % len(digits)])
                        if configs[label].get("before"):
                            store.flush(60)  # one at a time, as the old writer kept them
                    store.flush(600)
                    store.thumbnails.drain(600)
                    turns[label, endpoint].append((time.process_time() - start) / n * 1e3)
        for app, _ in apps.values():
            app.extensions["store"].close()
    costs = {
        label: [statistics.median(turns[label, endpoint]) for endpoint in PAYLOADS.values()]
        for label in configs
    }
    cells = {label: [f"{v:.2f}" for v in values] for label, values in costs.items()}
    off = costs["SAVE_IMAGES off"]
    for label in list(configs)[1:]:
        cells[f"`off / on` ({label.split(', ', 1)[1] if ',' in label else 'now'})"] = [
            f"{100 * a / b:.0f}%" for a, b in zip(off, costs[label], strict=True)
        ]
    rows += [f"| {label} | " + " | ".join(values) + " |" for label, values in cells.items()]
    rows.append("")
    rows.append(f"(each cell: the median of {rounds} turns of {n} requests, the configurations in turn)")
    return rows


def basics(n: int) -> None:
    """Print submit()'s cost on the request path, the writer's throughput, save() and thumbnails."""
    rng = np.random.default_rng(0)
    canvas = np.full((280, 280), 255, np.uint8)
    canvas[60:220, 120:160] = 0
    canvas_png = encoded(Image.fromarray(canvas), "PNG")
    photo = encoded(
        Image.fromarray(rng.integers(0, 256, (3000, 4000, 3), dtype=np.uint8)), "JPEG", quality=85
    )
    with tempfile.TemporaryDirectory() as folder:
        store = ImageStore(
            f"sqlite:///{Path(folder) / 'images.db'}", Path(folder) / "images", queue_size=n + 1
        )
        store.ensure_schema()
        image = InputImage(pixels=canvas, format="PNG", source="data_url", data=canvas_png)
        costs = []
        started = time.perf_counter()
        for _ in range(n):
            t = time.perf_counter()
            store.submit(image, endpoint="predict", model="numbers", prediction="1", confidence=0.99)
            costs.append((time.perf_counter() - t) * 1e6)
        store.flush(600)
        elapsed = time.perf_counter() - started
        print(
            f"submit() on the request path: p50 {percentile(costs, 50):.0f} us, p99 {percentile(costs, 99):.0f} us "
            f"({n} images of {len(canvas_png)} bytes)"
        )
        print(
            f"background writer: {n / elapsed:.0f} images/s (files + fsync + rows, one thread, group commit)"
        )
        saves = []
        for _ in range(min(n, 200)):
            t = time.perf_counter()
            store.save(NewImage(canvas_png, "PNG", 280, 280, endpoint="upload"))
            saves.append((time.perf_counter() - t) * 1e3)
        print(
            f"save() (an upload): p50 {statistics.median(saves):.2f} ms, p99 {percentile(saves, 99):.2f} ms"
        )
        for name, data, size in (
            ("280x280 PNG canvas", canvas_png, (280, 280)),
            ("4000x3000 JPEG", photo, (4000, 3000)),
        ):
            ids = [store.save(NewImage(data, name.split()[1], *size, endpoint="upload")) for _ in range(10)]
            times = []
            for image_id in ids:
                t = time.perf_counter()
                make_thumbnail(store, image_id)
                times.append((time.perf_counter() - t) * 1e3)
            print(f"thumbnail of a {name} from its file: median {statistics.median(times):.1f} ms")
        store.close()


def main(argv: list[str] | None = None) -> None:
    """Run the measurements and print them."""
    parser = argparse.ArgumentParser(prog="python -m bench.store", description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=500, help="images per measurement (default 500)")
    parser.add_argument(
        "--requests", type=int, default=1000, help="requests per in-process WSGI measurement (0: skip it)"
    )
    args = parser.parse_args(argv)
    basics(args.n)
    print()
    print("\n".join(parts_table(args.n)))
    if args.requests:
        print()
        logging.disable(logging.INFO)  # the access log line costs both sides the same
        try:
            print("\n".join(request_table(args.requests)))
        finally:
            logging.disable(logging.NOTSET)


if __name__ == "__main__":
    main()
