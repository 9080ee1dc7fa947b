"""The OpenCV Haar cascade the nose tracker served before BlazeFace, kept as training/face_detector.py's baseline."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


class HaarBaseline:
    """The OpenCV Haar cascade detection the nose tracker served before BlazeFace."""

    def __init__(self):
        folder = Path(cv2.data.haarcascades)
        self.cascade = cv2.CascadeClassifier(str(folder / "haarcascade_frontalface_default.xml"))
        self.cascade_alt = cv2.CascadeClassifier(str(folder / "haarcascade_frontalface_alt2.xml"))

    @staticmethod
    def _image(gray: np.ndarray) -> tuple[np.ndarray, float]:
        h, w = gray.shape
        scale = 1.0
        if max(h, w) > 640:
            scale = 640 / max(h, w)
        elif min(h, w) < 240:
            scale = min(240 / min(h, w), 1280 / max(h, w))
        if scale != 1.0:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        return cv2.equalizeHist(gray), scale

    def detect(self, gray: np.ndarray) -> list[tuple[float, ...]]:
        """Return boxes (x, y, w, h), largest first (the strict first look)."""
        small, scale = self._image(gray)
        m = max(24, int(0.06 * min(small.shape)))
        found = self.cascade.detectMultiScale(small, scaleFactor=1.1, minNeighbors=5, minSize=(m, m))
        boxes = [tuple(float(v) / scale for v in b) for b in found]
        return sorted(boxes, key=lambda b: b[2] * b[3], reverse=True)[:10]
