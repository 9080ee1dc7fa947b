"""Canvas renderings of Quick, Draw! bitmaps: the training-time simulation and the test fixtures.

Two pen models, kept apart on purpose so that no evaluation set shares a generator with training:

- `simulate` (training): a pen that follows the upscaled bitmap's Zhang-Suen skeleton with a
  distance-transform round pen, or one that grows or shrinks the drawing's outline (a level set of
  the upscaled bitmap, moved by a signed distance), fed through the served preprocessing
  (`models.doodles.to_bitmap`), so training sees what the service will.
- `write_fixtures` (tests/data/doodles/canvas): strokes re-inked along their thinned centre lines
  while filled areas stay filled (`models.doodles.restroke`). The out-of-collection set of
  `training.doodle_render` traces contours into simplified vector polylines and draws them with
  OpenCV's anti-aliased pen on canvases, colours and file formats training never sees.
"""

from __future__ import annotations

from multiprocessing import get_context
from pathlib import Path

import numpy as np


def simulate(bitmap: np.ndarray, rng: np.random.Generator, centre_line: float = 0.5) -> np.ndarray:
    """Draw a 28x28 bitmap as a canvas, then preprocess it as serving does.

    With probability `centre_line` the pen follows the drawing's centre lines (a skeleton of the
    upscaled bitmap, redrawn with a round pen of any width): what a user's strokes are, and where
    the bitmap's own detail is lost (close strokes merge, filled areas become lines, dots go).
    Otherwise the pen grows or shrinks the drawing's outline, which keeps filled areas.
    """
    import cv2

    side = int(rng.integers(84, 200))
    interpolation = cv2.INTER_CUBIC if rng.random() < 0.5 else cv2.INTER_LINEAR
    up = cv2.resize(bitmap, (side, side), interpolation=interpolation)
    if rng.random() < centre_line:
        return _centre_line_pen(bitmap, up, side, rng)
    return _outline_pen(bitmap, up, side, rng)


def _served(bitmap: np.ndarray, ink: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Put ink (0..1) on a light canvas as a dark pen and preprocess it as the route does."""
    from models.doodles import to_bitmap

    # Dark pen on a light canvas, as the route sees it after compositing on white.
    gray = 255.0 - ink * rng.uniform(170.0, 255.0)
    try:
        return to_bitmap(np.clip(np.rint(gray), 0, 255).astype(np.uint8))
    except ValueError:  # a drawing the pen erased entirely: keep the bitmap as it is
        return bitmap


def _centre_line_pen(bitmap: np.ndarray, up: np.ndarray, side: int, rng: np.random.Generator) -> np.ndarray:
    """Redraw the upscaled bitmap's skeleton (at a random ink level) with a round pen."""
    import cv2

    from models.doodles import thin

    mask = up >= rng.uniform(70.0, 160.0)
    if not mask.any():
        mask = up >= up.max() / 2
    skeleton = thin(mask)
    if not skeleton.any():
        return bitmap
    # Pen 0.6-3.5 bitmap px wide, plus a margin so a wide pen is not clipped at the canvas edge.
    diameter = rng.uniform(0.6, 3.5) * side / 28.0
    pad = int(np.ceil(diameter)) + 4
    skeleton = np.pad(skeleton, pad)
    to_centre = cv2.distanceTransform((~skeleton).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return _served(bitmap, np.clip(diameter / 2 + 0.5 - to_centre, 0.0, 1.0), rng)


def _outline_pen(bitmap: np.ndarray, up: np.ndarray, side: int, rng: np.random.Generator) -> np.ndarray:
    """Move the upscaled bitmap's outline (at a random ink level) out or in by a few bitmap px."""
    import cv2

    # The outline at a random ink level, then moved out or in by up to a few bitmap pixels.
    mask = (up >= rng.uniform(50.0, 200.0)).astype(np.uint8)
    if not mask.any():
        mask = (up >= up.max() / 2).astype(np.uint8)
    inside = cv2.distanceTransform(mask, cv2.DIST_L2, 3)
    outside = cv2.distanceTransform(1 - mask, cv2.DIST_L2, 3)
    signed = np.where(mask > 0, inside - 0.5, 0.5 - outside)
    grow = rng.uniform(-0.4, 2.5) * side / 28.0
    ink = np.clip(signed + grow + 0.5, 0.0, 1.0)
    pad = int(np.ceil(max(grow, 0.0))) + 4
    return _served(bitmap, np.pad(ink, pad) if grow > 0 else ink, rng)


def _simulate_chunk(args: tuple[np.ndarray, int, float]) -> np.ndarray:
    """Simulate one chunk of bitmaps with its own seed (a worker process's share)."""
    x, seed, centre_line = args
    rng = np.random.default_rng(seed)
    return np.stack([simulate(b, rng, centre_line) for b in x]) if len(x) else np.zeros((0, 28, 28), np.uint8)


def simulate_many(
    x: np.ndarray, seed: int, processes: int = 2, chunk: int = 2000, centre_line: float = 0.5
) -> np.ndarray:
    """Return one served-preprocessing simulation of every bitmap (deterministic for a seed)."""
    jobs = [(x[i : i + chunk], seed + i, centre_line) for i in range(0, len(x), chunk)]
    if processes <= 1 or len(jobs) <= 1:
        parts = [_simulate_chunk(job) for job in jobs]
    else:
        with get_context("spawn").Pool(processes) as pool:
            parts = pool.map(_simulate_chunk, jobs)
    return np.concatenate(parts) if parts else np.zeros((0, 28, 28), np.uint8)


def write_fixtures(
    folder: Path, x: np.ndarray, y: np.ndarray, src: np.ndarray, names: list[str], per_class: int, seed: int
) -> int:
    """Write held-out doodles as a raw 28x28 npz and as canvas-like PNG renderings."""
    import cv2
    from PIL import Image

    from models.doodles import restroke

    rng = np.random.default_rng(seed + 1)
    pick = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:per_class] for c in range(len(names))])
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        folder / "doodles_28.npz",
        x=x[pick],
        y=y[pick].astype(np.uint8),
        src_index=src[pick].astype(np.int32),
        class_names=np.array(names),
    )
    canvas_dir = folder / "canvas"
    canvas_dir.mkdir(exist_ok=True)
    for old in canvas_dir.glob("*.png"):
        old.unlink()
    rows = ["file,label,canvas,pen_px,background"]
    for i, k in enumerate(pick):
        size = int(rng.choice([280, 400, 600]))
        side = int(size * rng.uniform(0.45, 0.9))
        # Redraw the bitmap's strokes with a canvas pen 8-20 px wide (anti-aliased, as a browser
        # canvas draws), keeping coloured-in areas filled.
        big = cv2.resize(x[k], (side, side), interpolation=cv2.INTER_CUBIC) > 100
        pen = float(rng.uniform(8.0, 20.0))
        ink = restroke(big, pen)
        ys, xs = np.nonzero(ink > 0)
        ink = np.rint(ink[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] * 255).astype(np.uint8)
        h, w = ink.shape
        canvas = np.zeros((size, size), np.uint8)
        top, left = int(rng.integers(0, size - h + 1)), int(rng.integers(0, size - w + 1))
        canvas[top : top + h, left : left + w] = ink
        name = f"{i:03d}_{names[y[k]].replace(' ', '_')}.png"
        if i % 3 == 2:  # black strokes on a transparent background, as a canvas toDataURL gives
            rgba = np.zeros((size, size, 4), np.uint8)
            rgba[..., 3] = canvas
            Image.fromarray(rgba, "RGBA").save(canvas_dir / name, optimize=True)
            background = "transparent"
        else:
            Image.fromarray(255 - canvas, "L").save(canvas_dir / name, optimize=True)
            background = "white"
        rows.append(f"canvas/{name},{names[y[k]]},{size},{pen:.1f},{background}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return len(pick)


def canvas_accuracy(folder: Path, out: Path, names: list[str]) -> dict | None:
    """Score the exported ONNX model through DoodleModel (serving preprocessing) on canvas PNGs."""
    import csv

    from PIL import Image

    from models.doodles import DoodleModel

    index = folder / "labels.csv"
    if not index.is_file():
        return None
    with open(index, encoding="utf-8", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["label"] in names]
    if not rows:
        return None
    model = DoodleModel("doodles", out / "doodles.onnx", labels=out / "doodles_labels.txt")
    top1 = top3 = 0
    for row in rows:
        # As the image module's gray(): transparency composited on white.
        image = Image.open(folder / row["file"]).convert("RGBA")
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        white.alpha_composite(image)
        result = model(np.asarray(white.convert("L")), top=3)
        top1 += result["label"] == row["label"]
        top3 += row["label"] in [t["label"] for t in result["top"]]
    return {"n": len(rows), "top1": top1 / len(rows), "top3": top3 / len(rows), "folder": str(folder)}
