"""MediaPipe's BlazeFace face detector on ONNX Runtime: letterbox, decode the SSD anchors, NMS.

`models/face_detector.onnx` is MediaPipe's `face_detection_short_range.tflite` converted by
`training/face_detector.py`, which stores the anchor and decoder settings in the ONNX metadata
(MediaPipe's face_detection_short_range_common graph options). The model takes a (1, S, S, 3)
RGB float32 image in -1..1 and returns, per anchor, 16 regressors (box centre offset, width,
height, then 6 keypoints, all in input pixels relative to the anchor centre) and a face logit.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from models.runtime import ModelFileError, OnnxSession

# MediaPipe's keypoint order.
KEYPOINTS = ("right_eye", "left_eye", "nose_tip", "mouth", "right_ear_tragion", "left_ear_tragion")
# MediaPipe clips the raw score at +-100; sigmoid of that is exact in float64.
SCORE_CLIP = 100.0
METADATA_KEYS = (
    "input_size",
    "strides",
    "anchors_per_cell",
    "anchor_offset",
    "box_scale",
    "min_score",
    "iou",
)


@dataclass(frozen=True)
class Face:
    """A detected face: box (x, y = top-left corner, w, h) and keypoints in input pixels (edges)."""

    x: float
    y: float
    w: float
    h: float
    score: float
    keypoints: np.ndarray

    @property
    def box(self) -> tuple[float, float, float, float]:
        """Return (x, y, w, h)."""
        return (self.x, self.y, self.w, self.h)


@dataclass(frozen=True)
class Letterbox:
    """How an image was fitted into the input: scale per axis and padding on the left/top."""

    scale_x: float
    scale_y: float
    pad_x: int
    pad_y: int

    def to_image(self, points: np.ndarray) -> np.ndarray:
        """Map (..., 2) points in input pixels back to image pixels (edges)."""
        points = np.asarray(points, np.float64)
        return np.stack(
            [(points[..., 0] - self.pad_x) / self.scale_x, (points[..., 1] - self.pad_y) / self.scale_y],
            axis=-1,
        )


# One look at an image: the model's input tensor, and how its pixels map back to the image's.
Look = tuple[np.ndarray, Letterbox]


@functools.lru_cache(maxsize=32)
def ssd_anchors(
    height: int, width: int, strides: tuple[int, ...], anchors_per_cell: tuple[int, ...], offset: float
) -> np.ndarray:
    """Return the (N, 2) anchor centres in input pixels, in the order of the model's outputs.

    One anchor grid per stride (cells of `stride` input pixels), row-major, each cell repeated
    `anchors_per_cell` times: MediaPipe's SsdAnchorsCalculator with fixed_anchor_size, where
    consecutive layers of one stride share a grid (short range: 2 anchors at stride 8, then
    3 layers x 2 at stride 16 = 6; full range: 1 at stride 4). Cached: frames repeat sizes.
    """
    centres = []
    for stride, repeats in zip(strides, anchors_per_cell, strict=True):
        ys = (np.arange(height // stride) + offset) * stride
        xs = (np.arange(width // stride) + offset) * stride
        yy, xx = np.meshgrid(ys, xs, indexing="ij")
        centres.append(np.repeat(np.stack([xx.ravel(), yy.ravel()], axis=1), repeats, axis=0))
    anchors = np.concatenate(centres)
    anchors.flags.writeable = False
    return anchors


def iou_with(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Return the IoU of one (x0, y0, x1, y1) box with each of (N, 4) boxes."""
    ix = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = ix * iy
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def weighted_nms(corners: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, iou: float) -> list[tuple]:
    """Merge overlapping detections, best first: each kept box is the score-weighted mean of its cluster.

    MediaPipe's WEIGHTED non-max suppression (BlazeFace's "blending"): it steadies the box from
    frame to frame better than plain NMS. Returns (corners, keypoints, score) per face.
    """
    order = np.argsort(-scores, kind="stable")
    corners, keypoints, scores = corners[order], keypoints[order], scores[order]
    alive = np.ones(len(scores), bool)
    kept = []
    for i in range(len(scores)):
        if not alive[i]:
            continue
        cluster = alive & (iou_with(corners[i], corners) > iou)
        cluster[i] = True
        weights = scores[cluster][:, None]
        total = weights.sum()
        box = (corners[cluster] * weights).sum(0) / total
        points = (keypoints[cluster] * weights[:, :, None]).sum(0) / total
        kept.append((box, points, float(scores[i])))
        alive &= ~cluster
    return kept


def drop_parts(faces: list[Face], share: float = 0.5) -> list[Face]:
    """Drop a face lying mostly inside a larger one (a zoomed look that saw only part of a big face)."""
    faces = sorted(faces, key=lambda f: f.w * f.h, reverse=True)
    kept: list[Face] = []
    for f in faces:
        inside = [
            max(0.0, min(f.x + f.w, k.x + k.w) - max(f.x, k.x))
            * max(0.0, min(f.y + f.h, k.y + k.h) - max(f.y, k.y))
            for k in kept
        ]
        if not any(area > share * f.w * f.h for area in inside):
            kept.append(f)
    return kept


class FaceDetector:
    """BlazeFace on ONNX Runtime; `detect` is thread-safe (the session is, and nothing is mutated).

    Not a ServedModel: it is served only inside the nose model's preprocess, and one image takes
    one or two looks (tensors), so `detect` runs preprocess -> predict (per look) -> postprocess.
    """

    def __init__(self, path: Path, *, name: str = "face_detector", threads: int = 1):
        self.onnx = OnnxSession(Path(path), name=name, intra_op_threads=threads)
        meta = self.onnx.session.get_modelmeta().custom_metadata_map
        missing = [k for k in METADATA_KEYS if k not in meta]
        if missing:
            raise ModelFileError(
                f"{path} lacks the decoder settings {missing} in its metadata "
                "(rebuild it with `python -m training.face_detector`)"
            )
        self.size = int(meta["input_size"])
        self.strides = tuple(json.loads(meta["strides"]))
        self.anchors_per_cell = tuple(json.loads(meta["anchors_per_cell"]))
        self.anchor_offset = float(meta["anchor_offset"])
        # Regressors are in units of input_size / box_scale pixels (MediaPipe's x/y/w/h_scale).
        self.unit = self.size / float(meta["box_scale"])
        self.min_score = float(meta["min_score"])
        self.iou = float(meta["iou"])
        # The smallest face (box width, input pixels) found reliably, and the multiple that a
        # larger input's sides must be (0: the model takes only its square input).
        self.min_face_px = float(meta.get("min_face_px", 0)) or None
        self.multiple = int(meta.get("size_multiple", 0))
        self.name = meta.get("detector", Path(path).stem)
        outputs = self.onnx.session.get_outputs()
        self.regressors = next(i for i, o in enumerate(outputs) if o.shape[-1] == 16)
        self.classifiers = next(i for i, o in enumerate(outputs) if o.shape[-1] == 1)
        boxes = outputs[self.regressors].shape[1]
        anchors = len(self.anchors(self.size, self.size))
        if isinstance(boxes, int) and boxes != anchors:
            raise ModelFileError(f"{path}: {boxes} boxes but the metadata's anchors give {anchors}")

    def anchors(self, height: int, width: int) -> np.ndarray:
        """Return the anchor centres (input pixels) for an input of this size."""
        return ssd_anchors(height, width, self.strides, self.anchors_per_cell, self.anchor_offset)

    def letterbox(self, image: np.ndarray) -> Look:
        """Fit an image into the square input, keeping its aspect (centred, mid-grey border)."""
        h, w = image.shape[:2]
        return self._tensor(image, self.size / max(h, w), (self.size, self.size), centre=True)

    def zoomed(self, image: np.ndarray, zoom: float) -> Look:
        """Scale an image by `zoom` into an input whose sides are multiples of the model's grid."""
        h, w = image.shape[:2]
        m = self.multiple
        shape = (math.ceil(h * zoom / m) * m, math.ceil(w * zoom / m) * m)
        return self._tensor(image, zoom, shape, centre=False)

    @staticmethod
    def _tensor(image: np.ndarray, scale: float, shape: tuple[int, int], *, centre: bool):
        h, w = image.shape[:2]
        rw, rh = min(shape[1], max(1, round(w * scale))), min(shape[0], max(1, round(h * scale)))
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        resized = cv2.resize(image, (rw, rh), interpolation=interpolation)
        pad_x, pad_y = ((shape[1] - rw) // 2, (shape[0] - rh) // 2) if centre else (0, 0)
        # RGB in -1..1 as MediaPipe feeds it; the border is 0, MediaPipe's letterbox value.
        tensor = np.zeros((1, *shape, 3), np.float32)
        pixels = resized.astype(np.float32) / 127.5 - 1.0
        tensor[0, pad_y : pad_y + rh, pad_x : pad_x + rw] = pixels[..., None] if pixels.ndim == 2 else pixels
        return tensor, Letterbox(rw / w, rh / h, pad_x, pad_y)

    def decode(
        self,
        regressors: np.ndarray,
        logits: np.ndarray,
        shape: tuple[int, int],
        min_score: float | None = None,
    ) -> tuple[np.ndarray, ...]:
        """Turn raw outputs into (corners (N, 4), keypoints (N, 6, 2), scores) above the threshold.

        Coordinates are input pixels: MediaPipe's TensorsToDetections with unit-size anchors.
        """
        regressors = regressors.reshape(-1, 16).astype(np.float64)
        logits = np.clip(logits.reshape(-1).astype(np.float64), -SCORE_CLIP, SCORE_CLIP)
        scores = 1.0 / (1.0 + np.exp(-logits))
        keep = scores >= (self.min_score if min_score is None else min_score)
        anchors = self.anchors(*shape)[keep]
        regressors, scores = regressors[keep] * self.unit, scores[keep]
        centre = regressors[:, 0:2] + anchors
        half = regressors[:, 2:4] / 2
        corners = np.concatenate([centre - half, centre + half], axis=1)
        keypoints = regressors[:, 4:16].reshape(-1, 6, 2) + anchors[:, None, :]
        valid = (half > 0).all(axis=1)
        return corners[valid], keypoints[valid], scores[valid]

    # --- one contract with the served models: preprocess -> predict -> postprocess ----------------

    def preprocess(self, image: np.ndarray, *, min_face: float | None = None) -> list[Look]:
        """Return the looks to take at an RGB or gray uint8 image: input tensors, and how each maps back.

        One look at the whole image fitted into the model's square input finds faces from about
        a tenth of the longer side up. With `min_face` (pixels), a second look at the image
        scaled so that such a face is `min_face_px` wide finds the smaller ones.
        """
        h, w = image.shape[:2]
        looks = [self.letterbox(image)]
        if min_face and self.min_face_px and self.multiple:
            zoom = self.min_face_px / min_face
            if zoom > 1.25 * self.size / max(h, w):
                looks.append(self.zoomed(image, zoom))
        return looks

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run one look: every anchor's 16 regressors and its face logit."""
        outputs = self.onnx.run_all(x)
        return outputs[self.regressors], outputs[self.classifiers]

    def postprocess(
        self,
        outputs: list[tuple[np.ndarray, np.ndarray]],
        looks: list[Look],
        *,
        max_faces: int | None = None,
        fallback_score: float | None = None,
    ) -> list[Face]:
        """Decode every look's detections into image pixels and merge them into faces, largest first.

        Faces reaching the model's threshold; with `fallback_score`, when none does, the faces
        that reach this lower one instead.
        """
        lowest = self.min_score if fallback_score is None else min(fallback_score, self.min_score)
        parts = []
        for (regressors, logits), (tensor, box) in zip(outputs, looks, strict=True):
            corners, keypoints, scores = self.decode(regressors, logits, tensor.shape[1:3], lowest)
            corners = box.to_image(corners.reshape(-1, 2, 2)).reshape(-1, 4)
            parts.append((corners, box.to_image(keypoints), scores))
        corners, keypoints, scores = (np.concatenate(p) for p in zip(*parts, strict=True))
        sure = scores >= self.min_score
        faces = self._faces(corners[sure], keypoints[sure], scores[sure])
        if not faces and fallback_score is not None:
            faces = self._faces(corners, keypoints, scores)
        return faces[:max_faces] if max_faces else faces

    def detect(
        self,
        image: np.ndarray,
        *,
        min_face: float | None = None,
        max_faces: int | None = None,
        fallback_score: float | None = None,
    ) -> list[Face]:
        """Return the faces in an RGB or gray uint8 image, in its pixels, largest first (see the steps)."""
        looks = self.preprocess(image, min_face=min_face)
        outputs = [self.predict(tensor) for tensor, _ in looks]
        return self.postprocess(outputs, looks, max_faces=max_faces, fallback_score=fallback_score)

    def _faces(self, corners: np.ndarray, keypoints: np.ndarray, scores: np.ndarray) -> list[Face]:
        """Merge candidates into faces (weighted NMS, parts of larger faces dropped), largest first."""
        faces = [
            Face(x0, y0, x1 - x0, y1 - y0, score, points)
            for (x0, y0, x1, y1), points, score in weighted_nms(corners, keypoints, scores, self.iou)
        ]
        return drop_parts(faces)
