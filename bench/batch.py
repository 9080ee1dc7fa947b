"""What one line or one face costs when several come in one request, in-process.

    python -m bench.batch [--reps 30]

OCR: N of the committed clean lines (tests/data/ocr/lines) stacked in one image, 1 to 8 lines;
tracking: N of the committed 320x240 webcam frames (tests/data/tracking, one face each) tiled in one
image, 1 to 4 faces. Each image goes through the served model object (`models.registry`, production
settings: one ONNX thread, OpenCV single-threaded, IPP off) as the route calls it; the table gives
the CPU time (`time.process_time`, median of --reps calls after a warm-up) of the one request and
per item, against the same items sent one per request (the baseline, summed), and how many items
came back right.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from bench import payloads

OCR_COUNTS = (1, 2, 4, 8)
FACE_COUNTS = (1, 2, 4)


def cpu_ms(fn: Callable[[], Any], reps: int) -> float:
    """Return the median CPU milliseconds of fn over reps calls, after two unrecorded calls."""
    fn()
    fn()
    times = []
    for _ in range(reps):
        start = time.process_time()
        fn()
        times.append((time.process_time() - start) * 1000)
    return statistics.median(times)


def load_models() -> dict:
    """Load the OCR and tracking models as the service does (its registry, its process settings)."""
    from app import create_app

    app = create_app({"SAVE_IMAGES": False, "LOG_LEVEL": "WARNING"})
    registry = app.extensions["registry"]
    return {"ocr": registry.get("ocr"), "tracking": registry.get("tracking")}


def single_lines(n: int) -> tuple[list[np.ndarray], list[str]]:
    """Return the first n single-line clean fixtures (gray) and their text."""
    rows = [(p, t) for p, t in payloads.ocr_lines() if p.parent.name == "lines" and "\n" not in t][:n]
    return [np.asarray(Image.open(p).convert("L")) for p, _ in rows], [t for _, t in rows]


def stacked_lines(n: int) -> tuple[np.ndarray, list[str]]:
    """Stack the first n single-line clean fixtures with a white gap of half a line between."""
    images, texts = single_lines(n)
    width = max(i.shape[1] for i in images)
    parts = []
    for image in images:
        pad = np.full((image.shape[0] // 2, width), 255, np.uint8)
        parts += [np.pad(image, ((0, 0), (0, width - image.shape[1])), constant_values=255), pad]
    return np.vstack(parts[:-1]), texts


def single_frames(n: int) -> tuple[list[np.ndarray], list]:
    """Return n webcam frames (gray; the committed ones, repeated as needed) and their labels."""
    frames = [(p, nose, tol) for p, nose, tol in payloads.faces() if p.name.startswith("frame_")]
    frames = (frames * n)[:n]
    return [np.asarray(Image.open(p).convert("L")) for p, _, _ in frames], frames


def tiled_frames(n: int) -> tuple[np.ndarray, list[tuple[float, float, float]]]:
    """Tile n webcam frames two to a row; return the image and each nose in its pixels."""
    images, frames = single_frames(n)
    h, w = images[0].shape
    cols = min(n, 2)
    canvas = np.zeros((h * ((n + 1) // 2), w * cols), np.uint8)
    noses = []
    for k, (image, (_, nose, tol)) in enumerate(zip(images, frames, strict=True)):
        top, left = (k // 2) * h, (k % 2) * w
        canvas[top : top + h, left : left + w] = image
        noses.append((left + nose[0] * w, top + nose[1] * h, tol * max(w, h)))
    return canvas, noses


def ocr_rows(model, reps: int) -> list[dict]:
    """Measure OCR on 1..8 stacked lines."""
    rows = []
    for n in OCR_COUNTS:
        image, texts = stacked_lines(n)
        answer = model(image)
        read = answer["text"].split("\n")
        right = sum(a == b for a, b in zip(read, texts, strict=False))
        ms = cpu_ms(lambda image=image: model(image), reps)
        alone = sum(cpu_ms(lambda one=one: model(one), reps) for one in single_lines(n)[0])
        rows.append({"items": n, "ms": ms, "alone": alone, "right": right})
    return rows


def tracking_rows(model, reps: int) -> list[dict]:
    """Measure the nose tracker (detection on) on 1..4 tiled frames."""
    rows = []
    for n in FACE_COUNTS:
        image, noses = tiled_frames(n)
        h, w = image.shape
        found = model(image).get("faces", [])
        right = 0
        for nx, ny, tol in noses:
            right += any(np.hypot(f["x"] * w - nx, f["y"] * h - ny) <= tol for f in found)
        ms = cpu_ms(lambda image=image: model(image), reps)
        alone = sum(cpu_ms(lambda one=one: model(one), reps) for one in single_frames(n)[0])
        rows.append({"items": n, "ms": ms, "alone": alone, "right": right})
    return rows


def table(title: str, unit: str, rows: list[dict]) -> str:
    """Render one model's rows as Markdown: one request with N items against N requests of one."""
    out = [
        f"| {title}: {unit} in one request | CPU ms, one request | per {unit[:-1]} "
        f"| the same {unit}, one per request | ratio | right |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['items']} | {r['ms']:.1f} | {r['ms'] / r['items']:.1f} | {r['alone']:.1f} "
            f"| {r['ms'] / r['alone']:.2f}x | {r['right']}/{r['items']} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    """Measure and print both tables."""
    parser = argparse.ArgumentParser(prog="python -m bench.batch", description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=30, help="timed calls per point (default 30)")
    args = parser.parse_args(argv)
    models = load_models()
    print(table("OCR", "lines", ocr_rows(models["ocr"], args.reps)))
    print()
    print(table("tracking", "faces", tracking_rows(models["tracking"], args.reps)))


if __name__ == "__main__":
    main()
