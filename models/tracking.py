"""The nose tracker: find faces (MediaPipe's BlazeFace), regress each nose tip, map it back.

Pipeline for a whole frame: detect faces (models/face_detector.py, ONNX) -> crop each with the
margin of the training crops -> regress the nose tip on a 96x96 gray crop (ONNX, averaged with
its mirror image) -> map the point back to the input image. When the detector finds nothing but
the image is a tight face crop, the whole image is the crop ("mode": "whole_image").
`detect=False` skips detection.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from models.face_detector import FaceDetector
from models.image import to_gray
from models.runtime import ModelInputError, ServedModel

SIZE = 96
NOSE = 0
DETECTOR = Path(__file__).with_name("face_detector.onnx")
# A crop is crop_scale times the BlazeFace box width, its centre shifted by (dx, dy) box widths
# from the box centre. Measured by `python -m training.face_detector` (models/face_detector.md,
# "Crop calibration"): BlazeFace run on the 5,432 training crops of faces_96.npz, each padded
# with black to 192x192, the medians of 96 / box width and of the crop-centre offsets.
# tracking.onnx's own crop_* metadata (the same measurement on its training split, stamped by
# training/tracking.py) is used instead when its `crop_detector` names this detector; otherwise
# this default applies, as boxes of another detector frame the face differently.
DEFAULT_CROP = {"crop_scale": 2.142, "crop_dx": 0.014, "crop_dy": -0.003}
MAX_FACES = 10
# Detection runs on a copy whose longer side is at most DETECT_MAX (speed), and looks for
# faces down to MIN_FACE pixels wide in that copy (the detector's second, zoomed look).
DETECT_MAX = 640
MIN_FACE = 40
# MediaPipe's threshold for the full-range model is 0.6; 0.5 (its short-range one) admits the
# faces that score 0.5-0.6 (see models/face_detector.md), for images where none scores 0.6.
LENIENT_SCORE = 0.5
# Test-time views besides the mirror image: crops moved by whole pixels (no resampling), e.g.
# ((0, 0), (2, -2), (-2, 2)). The served model meets its validation target with the crop alone,
# and each shift costs another two passes, so none is served (the card compares the sets).
SHIFTS = ((0, 0),)
# Second look: the image padded by this share of its longer side on every side (a face that
# fills the image lacks the margin BlazeFace expects); a face box at least FACE_CROP_MIN of the
# shorter side means the image is itself a face crop (training crops are ~2.2 box widths).
SECOND_LOOK_PAD = 0.5
SECOND_LOOK_MIN = 0.2
FACE_CROP_MIN = 0.3
MIN_SIDE = 16


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


Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Faces:
    """What preprocess found in one image: each face's crop and box, the image size, how found."""

    crops: list[Crop]
    boxes: list[Box]
    size: tuple[int, int]
    mode: str


def as_detector_input(image: np.ndarray) -> np.ndarray:
    """Return the image as the detector takes it: RGB for colour (BGR/BGRA) input, else gray."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] in (3, 4) and image.dtype == np.uint8:
        return cv2.cvtColor(image[:, :, :3], cv2.COLOR_BGR2RGB)
    return to_gray(image)


def shift_crops(crops: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Translate (N, 96, 96) crops by (dx, dy) pixels, repeating the border pixels."""
    if dx == 0 and dy == 0:
        return crops
    move = np.float32([[1, 0, dx], [0, 1, dy]])
    return np.stack(
        [
            cv2.warpAffine(c, move, (SIZE, SIZE), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
            for c in crops
        ]
    )


class NoseModel(ServedModel):
    """Nose-tip tracker: BlazeFace face detection, then a CNN keypoint regressor on each face."""

    kind = "tracking"
    # Gray for both the detector and the regressor: the regressor was trained on gray crops, and
    # the detector's answers on gray frames are the ones measured in models/face_detector.md.
    input_mode = "gray"
    side_files = ("detector",)

    def __init__(self, name: str, path: Path, *, threads: int = 1, **options: Any):
        super().__init__(name, path, threads=threads, **options)
        # ONNX sessions are thread-safe and the detector keeps no state, so no lock is needed.
        self.detector = FaceDetector(
            Path(options.get("detector") or DETECTOR), name=f"{name}_face_detector", threads=threads
        )
        meta = self.onnx.session.get_modelmeta().custom_metadata_map
        own = meta.get("crop_detector") == self.detector.name
        self.crop = {k: float(meta[k]) if own and k in meta else v for k, v in DEFAULT_CROP.items()}
        self.flip_order = json.loads(meta["flip_order"]) if "flip_order" in meta else None
        # Mean residual of the training labels (see the model card): subtracted from each answer.
        offset = np.asarray(json.loads(meta.get("point_offset", "[0, 0]")), np.float32)
        self.offset = offset[NOSE] if offset.ndim == 2 else offset
        # Averaging with the mirrored crop lowers the error a little for a second (batched) pass.
        self.flip = bool(options.get("flip", True)) and self.flip_order is not None
        # Averaging over shifted crops as well lowers it a little more for 3x the regression's work
        # (models/tracking.md); `shifts=[(0, 0), (2, -2), (-2, 2)]` turns it on.
        self.shifts = tuple(map(tuple, options.get("shifts") or SHIFTS))

    # --- detection -------------------------------------------------------------------------

    @staticmethod
    def _detection_image(image: np.ndarray) -> tuple[np.ndarray, float]:
        """Return the detector's copy of the image (longer side at most DETECT_MAX) and its scale."""
        h, w = image.shape[:2]
        if max(h, w) <= DETECT_MAX:
            return image, 1.0
        scale = DETECT_MAX / max(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale

    def detect(self, image: np.ndarray) -> list[Box]:
        """Return face boxes (x, y, w, h) in input pixels, largest first.

        Faces scoring at least the model's threshold; when there is none, the largest face of at
        least MIN_FACE pixels scoring LENIENT_SCORE (low-resolution or blurred faces score there).
        """
        return self._detect(*self._detection_image(as_detector_input(image)))

    def _detect(self, small: np.ndarray, scale: float) -> list[Box]:
        """Detect on the detector's copy of the image (see `detect`); boxes in input pixels."""
        faces = self.detector.detect(small, min_face=MIN_FACE, fallback_score=LENIENT_SCORE)
        if faces and faces[0].score < self.detector.min_score:
            faces = [f for f in faces if f.w >= MIN_FACE][:1]
        return [tuple(v / scale for v in f.box) for f in faces[:MAX_FACES]]

    def second_look(self, small: np.ndarray, scale: float) -> Box | None:
        """Look again for one large face in the detector's copy padded with black; return its box.

        A face that fills the image (a tight crop) leaves BlazeFace none of the surroundings it
        expects; with a black margin, as the training crops have where they leave the photo,
        it is found. Only faces of at least a fifth of the shorter side count.
        """
        pad = round(SECOND_LOOK_PAD * max(small.shape[:2]))
        padded = cv2.copyMakeBorder(small, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
        faces = [f for f in self.detector.detect(padded) if f.w >= SECOND_LOOK_MIN * min(small.shape[:2])]
        if not faces:
            return None
        x, y, w, h = faces[0].box
        return ((x - pad) / scale, (y - pad) / scale, w / scale, h / scale)

    @staticmethod
    def is_face_crop(gray: np.ndarray, box: Box) -> bool:
        """Say whether a face box fills a near-square image as in the training crops."""
        h, w = gray.shape
        return 0.75 <= w / h <= 1.33 and box[2] >= FACE_CROP_MIN * min(h, w)

    def crop_for_box(self, box: Box) -> Crop:
        """Return the square crop around a face box that matches the training crops' face scale."""
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

    def preprocess(
        self, pixels: np.ndarray, *, detect: bool = True, **options: Any
    ) -> tuple[np.ndarray, Faces]:
        """Find the faces of an image (gray or BGR) and return their crops as the model's input.

        With `detect=False`, or when the image is itself a tight face crop, the whole image is
        the one crop. No face found: an empty batch, and no crops in the context.
        """
        gray = np.ascontiguousarray(to_gray(pixels))
        h, w = gray.shape
        if min(h, w) < MIN_SIDE:
            raise ModelInputError(
                f"The image is {w}x{h} pixels; at least {MIN_SIDE}x{MIN_SIDE} is needed to find a face.",
                code="image_too_small",
                status=422,  # a well-formed image, too small to read: not a malformed request
            )
        boxes = []
        if detect:
            # One copy for the detector (colour order, size) serves both looks.
            small, scale = self._detection_image(as_detector_input(pixels))
            boxes = self._detect(small, scale)
            if not boxes:
                box = self.second_look(small, scale)
                if box is None:
                    return np.zeros((0, SIZE, SIZE, 1), np.float32), Faces([], [], (w, h), "none")
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
        x = self.views(np.stack([c.extract(gray) for c in crops]))
        return x, Faces(crops, boxes, (w, h), mode)

    def views(self, crops: np.ndarray) -> np.ndarray:
        """Stack 96x96 uint8 crops, shifted and mirrored, into the model's (V*N, 96, 96, 1) input.

        Views are grouped: every crop shifted by the first shift, then by the next, and so on;
        with flip averaging that whole block again, mirrored.
        """
        crops = np.asarray(crops)
        if crops.ndim == 2:
            crops = crops[None]
        if crops.ndim != 3 or crops.shape[1:] != (SIZE, SIZE):
            raise ModelInputError(f"Expected {SIZE}x{SIZE} crops, got {list(crops.shape)}.")
        views = np.concatenate([shift_crops(crops, dx, dy) for dx, dy in self.shifts])
        if self.flip:
            views = np.concatenate([views, views[:, :, ::-1]])
        return np.ascontiguousarray(views[..., None], dtype=np.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Return each crop's nose tip (N, 2) in 96x96 pixel coordinates, averaged over its views."""
        if len(x) == 0:
            return np.zeros((0, 2), np.float32)
        points = self.onnx.run(x)
        if self.flip:
            half = len(points) // 2
            mirrored = points[half:, self.flip_order].copy()
            mirrored[..., 0] = SIZE - 1 - mirrored[..., 0]
            points = (points[:half] + mirrored) / 2
        points = points.reshape(len(self.shifts), -1, *points.shape[1:])
        points = points - np.asarray(self.shifts, np.float32)[:, None, None, :]
        return points.mean(axis=0)[:, NOSE] - self.offset

    def postprocess(self, y: np.ndarray, faces: Faces, **options: Any) -> dict:
        """Map the nose points back to the image, normalised to its width and height."""
        if not faces.crops:
            return {"found": False}
        w, h = faces.size
        found = []
        for point, crop, (bx, by, bw, bh) in zip(y, faces.crops, faces.boxes, strict=True):
            px, py = crop.to_image(point)
            found.append(
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
        best = found[0]
        return {
            "x": best["x"],
            "y": best["y"],
            "found": True,
            "mode": faces.mode,
            "face": best["face"],
            "faces": found,
        }

    def warmup_input(self) -> np.ndarray:
        """Return a batch shaped like a real call (crop plus mirror)."""
        return np.zeros(((2 if self.flip else 1) * len(self.shifts), SIZE, SIZE, 1), np.float32)

    def warmup(self) -> None:
        """Warm both ONNX sessions, the detector at a webcam frame's sizes (first calls allocate)."""
        super().warmup()
        for shape in ((480, 640), (240, 320)):
            self.detect(np.zeros(shape, np.uint8))

    def describe(self) -> dict:
        """Describe the model, its detector and crop calibration."""
        return {
            **super().describe(),
            "detector": self.detector.name,
            "detector_file": str(self.detector.onnx.path),
            "detector_sha256": self.detector.onnx.sha256,
            "crop": self.crop,
            "flip_average": self.flip,
            "shifted_views": [list(v) for v in self.shifts],
        }
