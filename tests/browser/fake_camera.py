"""Write a Y4M video Chromium can play as a fake camera (--use-file-for-fake-video-capture)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np


def fit_frame(rgb: np.ndarray, width: int, height: int) -> tuple[np.ndarray, float, float, float]:
    """Scale an image into a width x height frame (letterboxed, grey bars).

    Returns the frame and the mapping from image pixels to frame pixels: scale, x offset, y offset.
    """
    h, w = rgb.shape[:2]
    scale = min(width / w, height / h)
    new_w, new_h = round(w * scale), round(h * scale)
    frame = np.full((height, width, 3), 128, np.uint8)
    dx, dy = (width - new_w) // 2, (height - new_h) // 2
    frame[dy : dy + new_h, dx : dx + new_w] = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_AREA)
    return frame, scale, float(dx), float(dy)


def write_y4m(frames: Iterable[np.ndarray], path: Path, fps: int = 15) -> Path:
    """Write RGB frames (all the same even size) as a 4:2:0 Y4M file."""
    frames = list(frames)
    height, width = frames[0].shape[:2]
    assert width % 2 == 0 and height % 2 == 0, "4:2:0 needs even frame sizes"
    with open(path, "wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for rgb in frames:
            out.write(b"FRAME\n")
            out.write(cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2YUV_I420).tobytes())
    return path
