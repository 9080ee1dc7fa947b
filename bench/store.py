"""Measure the image store in-process: what saving costs a prediction, an upload, and a thumbnail.

`python -m bench.store` prints, on a temporary SQLite store: the time `submit()` adds to a
prediction (p50/p99), the background writer's throughput, a synchronous `save()` (an upload:
fsync + row), and the thumbnail of a 280x280 canvas and of a 4000x3000 JPEG photo.
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from models.image import InputImage
from store import ImageStore, NewImage
from store.thumbnails import make_thumbnail


def percentile(values: list[float], q: float) -> float:
    """Return the q-th percentile (0-100) of values."""
    return float(np.percentile(values, q))


def encoded(img: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **options)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> None:
    """Run the measurements and print them."""
    parser = argparse.ArgumentParser(prog="python -m bench.store", description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=500, help="images per measurement (default 500)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    canvas = np.full((280, 280), 255, np.uint8)
    canvas[60:220, 120:160] = 0
    canvas_png = encoded(Image.fromarray(canvas), "PNG")
    photo = encoded(
        Image.fromarray(rng.integers(0, 256, (3000, 4000, 3), dtype=np.uint8)), "JPEG", quality=85
    )

    with tempfile.TemporaryDirectory() as folder:
        store = ImageStore(
            f"sqlite:///{Path(folder) / 'images.db'}", Path(folder) / "images", queue_size=args.n + 1
        )
        store.ensure_schema()
        image = InputImage(pixels=canvas, format="PNG", source="data_url", data=canvas_png)

        costs = []
        started = time.perf_counter()
        for _ in range(args.n):
            t = time.perf_counter()
            store.submit(image, endpoint="predict", model="numbers", prediction="1", confidence=0.99)
            costs.append((time.perf_counter() - t) * 1e6)
        store.flush(600)
        elapsed = time.perf_counter() - started
        print(
            f"submit() on the request path: p50 {percentile(costs, 50):.0f} us, p99 {percentile(costs, 99):.0f} us "
            f"({args.n} images of {len(canvas_png)} bytes)"
        )
        print(f"background writer: {args.n / elapsed:.0f} images/s (file + fsync + row, one thread)")

        saves = []
        for _ in range(min(args.n, 200)):
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
            print(f"thumbnail of a {name}: median {statistics.median(times):.1f} ms")
        store.close()


if __name__ == "__main__":
    main()
