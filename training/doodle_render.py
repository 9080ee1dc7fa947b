"""Out-of-collection canvas renderings of Quick, Draw! bitmaps: vector strokes, as a drawing app sends them.

A pen model used nowhere in training or model choice: the bitmap's centre lines are traced into
polylines (simplified, as an app's pointer path would be) and drawn with OpenCV's anti-aliased
round pen on canvases of many shapes and sizes, with thin to thick pens, coloured pens, off-white or
transparent backgrounds, drawings small or large anywhere on the canvas, and PNG or JPEG files sent
as data URLs or multipart uploads. Training uses `training.doodle_canvas.simulate` (outline
dilation); the committed test fixtures re-ink along thinned lines (`models.doodles.restroke`).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

# Canvas (width, height) in px: phone portrait and landscape, the web pad, tablets, desktop.
CANVASES = ((280, 280), (360, 640), (640, 360), (400, 400), (500, 300), (800, 600), (1024, 768), (200, 200))
PENS = {"thin": (2.0, 5.0), "medium": (5.0, 16.0), "thick": (16.0, 36.0)}
COLOURS = {"black": (0, 0, 0), "blue": (25, 60, 200), "grey": (90, 90, 90), "red": (200, 30, 30)}
SUPERSAMPLE = 16  # cv2's sub-pixel shift: 4 bits


@dataclass
class Rendering:
    """One canvas file and how it was made."""

    data: bytes
    mime: str
    transport: str  # "json" (data URL in base64_drawing) or "multipart" (file field)
    canvas: str
    pen: str
    pen_px: float
    colour: str
    background: str
    bitmap: np.ndarray  # the same polylines rendered as Google rendered the dataset, 28x28


def google_bitmap(lines: list[np.ndarray]) -> np.ndarray:
    """Render polylines as the dataset's bitmaps were: long side 23.5 px, centred, 1.47-px pen."""
    import cv2

    from models.doodles import CENTRE_SPAN, SIZE, STROKE_WIDTH

    points = np.concatenate(lines)
    lo, hi = points.min(axis=0), points.max(axis=0)
    k = 8  # drawn at 8x, then area-averaged: anti-aliased as the dataset is
    scale = k * CENTRE_SPAN / max(float((hi - lo).max()), 1.0)
    offset = k * SIZE / 2 - (hi - lo) * scale / 2
    paths = [np.rint(((p - lo) * scale + offset - 0.5) * SUPERSAMPLE).astype(np.int32) for p in lines]
    big = np.zeros((k * SIZE, k * SIZE), np.uint8)
    cv2.polylines(big, paths, False, 255, round(k * STROKE_WIDTH), cv2.LINE_AA, shift=4)
    return cv2.resize(big, (SIZE, SIZE), interpolation=cv2.INTER_AREA)


def centre_lines(bitmap: np.ndarray) -> list[np.ndarray]:
    """Trace a 28x28 bitmap's strokes into polylines in a 224-px frame (8 px per bitmap px)."""
    import cv2

    from models.doodles import thin

    big = cv2.resize(bitmap, (224, 224), interpolation=cv2.INTER_LINEAR) >= 96
    skeleton = thin(big).astype(np.uint8)
    # A 1-px skeleton's contour walks each line out and back, so drawing it open gives each
    # stroke once (twice over the same path): a pointer path, simplified at 1 px as apps do.
    contours, _ = cv2.findContours(skeleton, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    return [cv2.approxPolyDP(c, 1.0, False).reshape(-1, 2).astype(np.float64) for c in contours]


def render(bitmap: np.ndarray, rng: np.random.Generator) -> Rendering:
    """Draw one bitmap's centre lines as a canvas file, with random canvas, pen, colours and format."""
    import cv2
    from PIL import Image

    lines = centre_lines(bitmap)
    if not lines:
        raise ValueError("nothing to draw")
    width, height = CANVASES[int(rng.integers(len(CANVASES)))]
    pen = str(rng.choice(list(PENS)))
    points = np.concatenate(lines)
    lo, hi = points.min(axis=0), points.max(axis=0)
    extent = max(float((hi - lo).max()), 1.0)
    box = rng.uniform(0.3, 0.9) * min(width, height)
    pen_px = float(rng.uniform(*PENS[pen])) * min(width, height) / 400.0
    pen_px = max(2.0, min(pen_px, box / 6.0))
    scale = (box - pen_px) / extent
    size = (hi - lo) * scale
    margin = pen_px / 2 + 1
    left = rng.uniform(margin, max(margin, width - size[0] - margin))
    top = rng.uniform(margin, max(margin, height - size[1] - margin))
    paths = [np.rint(((p - lo) * scale + (left, top)) * SUPERSAMPLE).astype(np.int32) for p in lines]
    colour = str(rng.choice(list(COLOURS)))
    background = str(rng.choice(["white", "white", "paper", "transparent"]))
    ink = np.zeros((height, width), np.uint8)
    cv2.polylines(ink, paths, False, 255, max(1, round(pen_px)), cv2.LINE_AA, shift=4)
    rgb = np.array(COLOURS[colour], np.float32)
    if background == "transparent":
        image = np.zeros((height, width, 4), np.uint8)
        image[..., :3] = rgb.astype(np.uint8)
        image[..., 3] = ink
        pil = Image.fromarray(image, "RGBA")
    else:
        paper = np.array((255, 255, 255) if background == "white" else (248, 244, 232), np.float32)
        a = ink.astype(np.float32)[..., None] / 255.0
        pil = Image.fromarray(np.rint(paper * (1 - a) + rgb * a).astype(np.uint8), "RGB")
    buf = io.BytesIO()
    if background != "transparent" and rng.random() < 0.3:
        pil.save(buf, format="JPEG", quality=int(rng.integers(60, 93)))
        mime = "image/jpeg"
    else:
        pil.save(buf, format="PNG")
        mime = "image/png"
    return Rendering(
        data=buf.getvalue(),
        mime=mime,
        transport="multipart" if rng.random() < 0.3 else "json",
        canvas=f"{width}x{height}",
        pen=pen,
        pen_px=pen_px,
        colour=colour,
        background=background,
        bitmap=google_bitmap(lines),
    )
