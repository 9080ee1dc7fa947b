"""The nose tracker: find faces (OpenCV Haar cascade), regress each nose tip, map it back.

Pipeline for a whole frame: detect faces -> crop each with the margin of the training crops ->
regress the nose tip on a 96x96 gray crop (ONNX, averaged with its mirror image) -> map the
point back to the input image. When the detector finds nothing but the image is a tight face
crop, the whole image is the crop ("mode": "whole_image"). `detect=False` skips detection.

The Haar cascades ship in opencv-python-headless 4.x wheels (`cv2.data.haarcascades`); 5.0
wheels no longer carry them, which is why the project pins OpenCV 4.x.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from models.runtime import ModelFileError, ModelInputError, ServedModel

SIZE = 96
NOSE = 0
# A crop is this many times the Haar box width, shifted by (dx, dy) box widths, unless the
# ONNX metadata (measured on the training crops by training/tracking.py) says otherwise.
DEFAULT_CROP = {"crop_scale": 2.0, "crop_dx": 0.0, "crop_dy": 0.07}
CASCADE = "haarcascade_frontalface_default.xml"
# The second look also asks this cascade (it finds some faces the default one misses).
CASCADE_ALT = "haarcascade_frontalface_alt2.xml"
MAX_FACES = 10
# Second look: faces of at least this fraction of the shorter side; a box at least FACE_CROP_MIN
# of it means the image is itself a face crop (training crops are about 2x the Haar box).
SECOND_LOOK_MIN = 0.2
FACE_CROP_MIN = 0.4
MIN_SIDE = 16
# Detection runs on a copy whose longer side is at most this (speed), and small images are
# upscaled so their shorter side is at least DETECT_MIN (Haar's window is 24 px).
DETECT_MAX = 640
DETECT_MIN = 240


@dataclass(frozen=True)
class Crop:
    """A square region of the input image (x0, y0 = top-left corner, side in pixels)."""

    x0: int
    y0: int
    side: int

    def extract(self, gray: np.ndarray) -> np.ndarray:
        """Cut the square out of the image (zero outside it, as in the training crops) at 96x96."""
        h, w = gray.shape
        patch = np.zeros((self.side, self.side), np.uint8)
        sx0, sy0 = max(self.x0, 0), max(self.y0, 0)
        sx1, sy1 = min(self.x0 + self.side, w), min(self.y0 + self.side, h)
        if sx1 > sx0 and sy1 > sy0:
            patch[sy0 - self.y0 : sy1 - self.y0, sx0 - self.x0 : sx1 - self.x0] = gray[sy0:sy1, sx0:sx1]
        interpolation = cv2.INTER_AREA if self.side > SIZE else cv2.INTER_LINEAR
        return cv2.resize(patch, (SIZE, SIZE), interpolation=interpolation)

    def to_image(self, point: np.ndarray) -> tuple[float, float]:
        """Map a crop point (96x96 pixel centres) to continuous image coordinates (pixel edges)."""
        s = self.side / SIZE
        return self.x0 + (float(point[0]) + 0.5) * s, self.y0 + (float(point[1]) + 0.5) * s


def as_gray(image: np.ndarray) -> np.ndarray:
    """Return a 2-D uint8 gray image from gray, BGR or BGRA input."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3 and image.shape[2] in (3, 4):
        image = cv2.cvtColor(image[:, :, :3], cv2.COLOR_BGR2GRAY)
    if image.ndim != 2:
        raise ModelInputError(f"Expected a gray or colour image, got an array of shape {list(image.shape)}.")
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image)


class NoseModel(ServedModel):
    """Nose-tip tracker: Haar face detection, then a CNN keypoint regressor on each face."""

    kind = "tracking"

    def __init__(self, name: str, path: Path, *, threads: int = 1, **options: Any):
        super().__init__(name, path, threads=threads, **options)
        meta = self.onnx.session.get_modelmeta().custom_metadata_map
        self.crop = {k: float(meta.get(k, v)) for k, v in DEFAULT_CROP.items()}
        self.flip_order = json.loads(meta["flip_order"]) if "flip_order" in meta else None
        # Mean residual of the training labels (see the model card): subtracted from each answer.
        offset = np.asarray(json.loads(meta.get("point_offset", "[0, 0]")), np.float32)
        self.offset = offset[NOSE] if offset.ndim == 2 else offset
        # Averaging with the mirrored crop lowers the error a little for a second (batched) pass.
        self.flip = bool(options.get("flip", True)) and self.flip_order is not None
        folder = Path(options.get("cascades") or cv2.data.haarcascades)
        self.cascade = self._cascade(folder / CASCADE)
        self.cascade_alt = self._cascade(folder / CASCADE_ALT)
        # CascadeClassifier.detectMultiScale is not safe to call from several threads at once;
        # the ONNX session is, so only detection is serialised, per model.
        self._detect_lock = threading.Lock()

    @staticmethod
    def _cascade(path: Path) -> cv2.CascadeClassifier:
        cascade = cv2.CascadeClassifier(str(path))
        if cascade.empty():
            raise ModelFileError(f"cannot load Haar cascade {path} (opencv-python-headless 4.x ships it)")
        return cascade

    # --- detection -------------------------------------------------------------------------

    def _detection_image(self, gray: np.ndarray) -> tuple[np.ndarray, float]:
        """Return the equalised image the cascade runs on and its scale to the input."""
        h, w = gray.shape
        scale = 1.0
        if max(h, w) > DETECT_MAX:
            scale = DETECT_MAX / max(h, w)
        elif min(h, w) < DETECT_MIN:
            scale = min(DETECT_MIN / min(h, w), 2 * DETECT_MAX / max(h, w))
        if scale != 1.0:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        return cv2.equalizeHist(gray), scale

    def detect(self, gray: np.ndarray) -> list[tuple[float, float, float, float]]:
        """Return face boxes (x, y, w, h) in input pixels, largest first."""
        small, scale = self._detection_image(gray)
        min_size = max(24, int(0.06 * min(small.shape)))
        with self._detect_lock:
            found = self.cascade.detectMultiScale(
                small, scaleFactor=1.1, minNeighbors=5, minSize=(min_size, min_size)
            )
        boxes = [tuple(float(v) / scale for v in box) for box in found]
        boxes.sort(key=lambda b: b[2] * b[3], reverse=True)
        return boxes[:MAX_FACES]

    def second_look(self, gray: np.ndarray) -> tuple[float, float, float, float] | None:
        """Look again, leniently, for one large face the strict pass missed; return its box.

        The image is padded (a tight crop leaves the cascade no room around the face) and both
        cascades are asked with a lenient neighbour count, for faces of at least a fifth of the
        shorter side only, which keeps false alarms on textures rare.
        """
        small, scale = self._detection_image(gray)
        pad = min(small.shape) // 4
        padded = cv2.copyMakeBorder(small, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        min_size = int(SECOND_LOOK_MIN * min(small.shape))
        with self._detect_lock:
            for cascade in (self.cascade, self.cascade_alt):
                found = cascade.detectMultiScale(
                    padded, scaleFactor=1.05, minNeighbors=2, minSize=(min_size, min_size)
                )
                if len(found):
                    x, y, w, h = max(found, key=lambda b: b[2] * b[3])
                    return ((x - pad) / scale, (y - pad) / scale, w / scale, h / scale)
        return None

    @staticmethod
    def is_face_crop(gray: np.ndarray, box: tuple[float, float, float, float]) -> bool:
        """Say whether a face box fills a near-square image as in the training crops."""
        h, w = gray.shape
        return 0.75 <= w / h <= 1.33 and box[2] >= FACE_CROP_MIN * min(h, w)

    def crop_for_box(self, box: tuple[float, float, float, float]) -> Crop:
        """Return the square crop around a Haar box that matches the training crops' face scale."""
        x, y, w, h = box
        side = self.crop["crop_scale"] * w
        cx = x + w / 2 + self.crop["crop_dx"] * w
        cy = y + h / 2 + self.crop["crop_dy"] * w
        return Crop(round(cx - side / 2), round(cy - side / 2), max(1, round(side)))

    @staticmethod
    def whole_image_crop(gray: np.ndarray) -> Crop:
        """Return the square that holds the whole image, centred (the shorter side is padded)."""
        h, w = gray.shape
        side = max(h, w)
        return Crop((w - side) // 2, (h - side) // 2, side)

    # --- the model contract --------------------------------------------------------------------

    def preprocess(self, crops: np.ndarray) -> np.ndarray:
        """Stack 96x96 uint8 crops (and their mirrors) into the model's (N, 96, 96, 1) input."""
        crops = np.asarray(crops)
        if crops.ndim == 2:
            crops = crops[None]
        if crops.shape[1:] != (SIZE, SIZE):
            raise ModelInputError(f"Expected {SIZE}x{SIZE} crops, got {list(crops.shape)}.")
        if self.flip:
            crops = np.concatenate([crops, crops[:, :, ::-1]])
        return np.ascontiguousarray(crops[..., None], dtype=np.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Return each crop's nose tip (N, 2) in 96x96 pixel coordinates."""
        points = self.onnx.run(x)
        if self.flip:
            n = len(points) // 2
            mirrored = points[n:, self.flip_order].copy()
            mirrored[..., 0] = SIZE - 1 - mirrored[..., 0]
            points = (points[:n] + mirrored) / 2
        return points[:, NOSE] - self.offset

    def postprocess(
        self,
        y: np.ndarray,
        *,
        crops: list[Crop] | None = None,
        boxes: list[tuple[float, float, float, float]] | None = None,
        size: tuple[int, int] = (SIZE, SIZE),
        mode: str = "whole_image",
    ) -> dict:
        """Map the nose points back to the image, normalised to its width and height."""
        w, h = size
        crops = crops or [Crop(0, 0, SIZE)] * len(y)
        boxes = boxes or [(0.0, 0.0, float(w), float(h))] * len(y)
        faces = []
        for point, crop, (bx, by, bw, bh) in zip(y, crops, boxes, strict=True):
            px, py = crop.to_image(point)
            faces.append(
                {
                    "x": round(min(max(px / w, 0.0), 1.0), 4),
                    "y": round(min(max(py / h, 0.0), 1.0), 4),
                    "face": {
                        "x": round(bx / w, 4),
                        "y": round(by / h, 4),
                        "w": round(bw / w, 4),
                        "h": round(bh / h, 4),
                    },
                }
            )
        best = faces[0]
        return {
            "x": best["x"],
            "y": best["y"],
            "found": True,
            "mode": mode,
            "face": best["face"],
            "faces": faces,
        }

    def __call__(self, image: np.ndarray, *, detect: bool = True) -> dict:
        """Find the nose tip of every face in an image (gray or BGR), largest face first."""
        gray = as_gray(image)
        h, w = gray.shape
        if min(h, w) < MIN_SIDE:
            raise ModelInputError(
                f"The image is {w}x{h} pixels; at least {MIN_SIDE}x{MIN_SIDE} is needed to find a face.",
                code="image_too_small",
            )
        boxes = self.detect(gray) if detect else []
        if detect and not boxes:
            box = self.second_look(gray)
            if box is None:
                return {"found": False}
            # A tight crop is regressed whole (as trained); a face inside a frame gets its crop.
            if not self.is_face_crop(gray, box):
                boxes = [box]
        if boxes:
            mode = "detected"
            crops = [self.crop_for_box(b) for b in boxes]
        else:
            mode = "whole_image"
            crops = [self.whole_image_crop(gray)]
            boxes = [(0.0, 0.0, float(w), float(h))]
        points = self.predict(self.preprocess(np.stack([c.extract(gray) for c in crops])))
        return self.postprocess(points, crops=crops, boxes=boxes, size=(w, h), mode=mode)

    def warmup_input(self) -> np.ndarray:
        """Return a batch shaped like a real call (crop plus mirror)."""
        return np.zeros((2 if self.flip else 1, SIZE, SIZE, 1), np.float32)

    def warmup(self) -> None:
        """Warm the ONNX session and the cascades (their first call allocates)."""
        super().warmup()
        self.detect(np.zeros((120, 160), np.uint8))

    def predict_raw(self, x: np.ndarray) -> np.ndarray:
        """Run the ONNX model alone: (N, 96, 96, 1) float32 -> (N, K, 2) keypoints."""
        return self.onnx.run(x)

    def describe(self) -> dict:
        """Describe the model, its detector and crop calibration."""
        return {**super().describe(), "detector": CASCADE, "crop": self.crop, "flip_average": self.flip}
