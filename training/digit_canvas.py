"""Digits as the canvas page sends them, made from MNIST digits, and the training augmentation.

Part of `python -m training.numbers`: the canvas renderings train the model on what the service sees.
"""

from __future__ import annotations

import cv2
import numpy as np

from models.numbers import SIZE, to_mnist
from models.runtime import ModelInputError

# ---------------------------------------------------------------------------- canvas rendering


def render_canvas(
    digit: np.ndarray,
    rng: np.random.Generator,
    *,
    scale: int = 4,
    side: int | None = None,
    solid: float = 0.6,
    thickness: tuple[int, int] = (-2, 4),
    tilt: float = 15.0,
    fill: tuple[float, float] = (0.45, 0.8),
) -> np.ndarray:
    """Redraw a 28x28 MNIST digit as a browser canvas holds it: large, black on white, random pen.

    `thickness` bounds the pen change in steps of `scale` / 4 pixels (negative thins it),
    `fill` the digit's height as a share of the canvas, `side` the canvas size.
    """
    big = cv2.resize(digit, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    # A pen of random width: grow or thin the strokes.
    step = rng.integers(thickness[0], thickness[1] + 1)
    if step:
        size = 2 * abs(int(step)) * max(1, scale // 4) + 1
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
        big = cv2.dilate(big, kernel) if step > 0 else cv2.erode(big, kernel)
        if not big.any():  # thinned away: keep the original pen
            big = cv2.resize(digit, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    # Canvas strokes are solid with antialiased edges, MNIST's are soft: mix both.
    if rng.random() < solid:
        _, big = cv2.threshold(big, int(rng.integers(60, 160)), 255, cv2.THRESH_BINARY)
        big = cv2.GaussianBlur(big, (3, 3), 0)
    side = side or int(28 * scale * 1.5)
    # Rotation, shear and aspect about the digit's centre, then a random size and place.
    height = rng.uniform(*fill) * side / (20 * scale)
    angle = np.deg2rad(rng.uniform(-tilt, tilt))
    shear = rng.uniform(-0.25, 0.25)
    aspect = np.exp(rng.uniform(-0.2, 0.2))
    c, s = np.cos(angle), np.sin(angle)
    linear = height * np.array([[c, -s], [s, c]]) @ np.array([[aspect, shear], [0, 1 / aspect]])
    centre = np.array([14 * scale, 14 * scale])
    # Half the transformed digit's extent per axis (its box is 20 px, placed near 14 by MNIST),
    # so the digit stays inside the canvas as a person's drawing does.
    half = np.abs(linear) @ np.array([12 * scale, 12 * scale])
    if (half > side / 2).any():
        linear *= side / 2 / half.max()
        half = np.abs(linear) @ np.array([12 * scale, 12 * scale])
    room = np.maximum(side / 2 - half, 0)
    target = side / 2 + rng.uniform(-1, 1, 2) * room
    matrix = np.hstack([linear, (target - linear @ centre)[:, None]]).astype(np.float32)
    canvas = cv2.warpAffine(big, matrix, (side, side), flags=cv2.INTER_LINEAR, borderValue=0)
    return 255 - canvas


def canvas_like(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Return a digit redrawn as a canvas and brought back through the serving preprocessing."""
    try:
        return to_mnist(render_canvas(digit, rng))
    except ModelInputError:  # a pen thin enough to vanish: keep the original
        return digit


def jitter(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Return a digit with a small random rotation, scale and shift, as MNIST itself varies."""
    angle = rng.uniform(-10, 10)
    zoom = rng.uniform(0.9, 1.1)
    matrix = cv2.getRotationMatrix2D((13.5, 13.5), angle, zoom)
    matrix[:, 2] += rng.uniform(-2, 2, 2)
    return cv2.warpAffine(digit, matrix, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderValue=0)


def augment(x: np.ndarray, rng: np.random.Generator, canvas_share: float = 0.4) -> np.ndarray:
    """Augment a batch of uint8 digits: some redrawn as canvases, most jittered, a few untouched."""
    out = np.empty_like(x)
    draws = rng.random(len(x))
    for i, (digit, r) in enumerate(zip(x, draws, strict=True)):
        if r < canvas_share:
            out[i] = canvas_like(digit, rng)
        elif r < 0.85:
            out[i] = jitter(digit, rng)
        else:
            out[i] = digit
    return out


def as_tensor(x: np.ndarray) -> np.ndarray:
    """Turn uint8 digits (N, 28, 28) into the model's float input (N, 28, 28, 1) in [0, 1]."""
    return (x.astype(np.float32) / 255.0)[..., None]
