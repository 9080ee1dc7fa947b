"""The doodle model through /api/classifier: canvas files must score as their dataset bitmaps do."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import data_url, png_bytes

FIXTURES = Path(__file__).resolve().parents[1] / "data" / "doodles"
# Measured through the route with doodles.onnx of 2026-12-04 (see models/doodles.md): on the 360
# committed canvases top-1 CANVAS_MEASURED, on their bitmaps BITMAP_MEASURED; on the new renderer's
# canvases of the first 8 drawings per class RENDERED_MEASURED. Floors sit ~1.5 points under.
CANVAS_MEASURED = 0.900
BITMAP_MEASURED = 0.903
RENDERED_MEASURED = 0.854
SLACK = 0.015


def classify(client, data: bytes, mime: str = "image/png", transport: str = "json") -> str:
    """Post one image to /api/classifier as users do; return the label."""
    if transport == "multipart":
        r = client.post(
            "/api/classifier",
            data={"file": (io.BytesIO(data), "drawing", mime)},
            content_type="multipart/form-data",
        )
    else:
        r = client.post("/api/classifier", json={"base64_drawing": data_url(data, mime)})
    assert r.status_code == 200, r.get_json()
    return r.get_json()["label"]


@pytest.fixture(scope="module")
def fixtures() -> tuple[list[dict], np.ndarray]:
    with open(FIXTURES / "labels.csv", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    with np.load(FIXTURES / "doodles_28.npz") as d:
        return rows, d["x"]


@pytest.mark.slow  # 720 requests: ~10 s of CPU
def test_canvas_fixtures_score_as_their_bitmaps_through_the_route(client, fixtures) -> None:
    rows, bitmaps = fixtures
    canvas = [classify(client, (FIXTURES / r["file"]).read_bytes()) == r["label"] for r in rows]
    bitmap = [classify(client, png_bytes(bitmaps[int(r["file"][7:10])])) == r["label"] for r in rows]
    top1, raw = float(np.mean(canvas)), float(np.mean(bitmap))
    assert top1 >= CANVAS_MEASURED - SLACK, f"canvas top-1 {top1:.3f}"
    assert raw >= BITMAP_MEASURED - SLACK, f"bitmap top-1 {raw:.3f}"
    # The served path must not cost accuracy: the same drawings, canvas vs bitmap (measured 0.3
    # points; 0.8 with the previous model and preprocessing).
    assert raw - top1 <= 0.01, f"bitmap {raw:.3f} vs canvas {top1:.3f}"


@pytest.mark.slow  # 192 renderings and requests: ~8 s
def test_vector_pen_canvases_through_the_route(client, fixtures) -> None:
    from training.doodle_render import render

    rows, bitmaps = fixtures
    rng = np.random.default_rng(17)
    picked = [i for i, r in enumerate(rows) if int(r["file"][7:10]) % 15 < 8]
    hits, pens = [], set()
    for i in picked:
        drawing = render(bitmaps[i], rng)
        pens.add(drawing.pen)
        hits.append(classify(client, drawing.data, drawing.mime, drawing.transport) == rows[i]["label"])
    assert len(hits) == 192 and pens == {"thin", "medium", "thick"}
    top1 = float(np.mean(hits))
    assert top1 >= RENDERED_MEASURED - SLACK, f"rendered canvas top-1 {top1:.3f}"


def test_rendered_canvas_is_a_real_image() -> None:
    from training.doodle_render import render

    with np.load(FIXTURES / "doodles_28.npz") as d:
        bitmap = d["x"][0]
    drawing = render(bitmap, np.random.default_rng(3))
    image = Image.open(io.BytesIO(drawing.data))
    assert image.format in ("PNG", "JPEG")
    assert f"{image.width}x{image.height}" == drawing.canvas
    gray = np.asarray(image.convert("L"))
    assert gray.min() < 200 if drawing.background != "transparent" else image.mode == "RGBA"
