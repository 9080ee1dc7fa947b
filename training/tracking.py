"""Train the nose-tip regressor on 96x96 gray face crops; export .keras, .onnx and the model card.

Reproduce (about 15 min on 2 shared CPU cores):

    python -m training.tracking --data ../shared/data/faces/faces_96.npz --points 68

`--points 10` regresses the nose tip and 9 other landmarks only (the model before); `--members N`
trains N nets from seeds counting up and exports one graph averaging them, and `--assemble`
averages nets trained by separate runs (the variants compared in the model card).

With `--evaluate-only` the committed model is re-measured without training: when its crop
calibration (ONNX metadata `crop_detector`) is not for the face detector models/tracking.py
serves, it is measured again and stamped into tracking.onnx's metadata (weights untouched).

Data: `faces_96.npz` (5,432 crops, 68 landmarks each) is built from the Udacity CVND
P1_Facial_Keypoints files (YouTube Faces frames, https://github.com/udacity/P1_Facial_Keypoints,
`data/training*`, `data/test*` and the two keypoint CSVs) and the 300-W HELEN train/test sets
(.jpg + .pts from https://ibug.doc.ic.ac.uk/resources/300-W/), cropped and resized as described
in that file's PROVENANCE.md. The keys used here are `images`, `landmarks68`, `source`, `names`.

Held-out split (identity-disjoint, fixed):
- the whole 300-W HELEN testset (source 3), which no training image shares;
- every Udacity image (train *and* test CSVs, which share all 347 identities) of the
  identities whose SHA-1 of the name is 0 mod 10 (about a tenth of them).
A validation split for monitoring only (1 mod 10 Udacity identities, 1 mod 10 HELEN-train
photos) is also kept out of training; the model card's figures come from the held-out split.

Model input: (N, 96, 96, 1) float32 gray values 0..255 (the model rescales itself), i.e. the
training crops as stored. Output: (N, K, 2) keypoints (x, y) in 96x96 pixel coordinates
(0-based pixel centres); keypoint 0 is the nose tip (landmark 30), K = 68 or 10 (`--points`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import re
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np

from training import tf_setup

SIZE = 96
# Landmarks regressed: the nose tip first (the one served), then a few points whose geometry
# helps the network place it; the eye corners also give the inter-ocular normaliser.
KEYPOINTS = (30, 27, 33, 36, 45, 39, 42, 48, 54, 8)
# Denser supervision (`--points 68`): every landmark, the nose tip still first.
ALL_POINTS = (30, *(k for k in range(68) if k != 30))
# Where each 68-point landmark goes under a horizontal flip (left and right swap; iBUG order).
_MIRROR = (
    [(i, 16 - i) for i in range(8)]
    + [(17, 26), (18, 25), (19, 24), (20, 23), (21, 22), (31, 35), (32, 34)]
    + [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]
    + [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58), (60, 64), (61, 63), (65, 67)]
)
FLIP_PAIRS = {**dict(_MIRROR), **{b: a for a, b in _MIRROR}}


def flip_order(keypoints: tuple[int, ...]) -> list[int]:
    """Return, for each keypoint, the index of the keypoint it becomes in the mirrored image."""
    return [keypoints.index(FLIP_PAIRS.get(k, k)) for k in keypoints]


FLIP_ORDER = flip_order(KEYPOINTS)
NOSE = 0
LEFT_EYE_OUTER, RIGHT_EYE_OUTER = 36, 45
SOURCE_KEYS = ("udacity_train", "udacity_test", "helen_train", "helen_test")
HEATMAP = 24  # soft-argmax grid: 4 input pixels per cell
ROOT = Path(__file__).resolve().parent.parent


def identity(name: str, source: int) -> str:
    """Return the group a sample belongs to: a person (Udacity) or a photo (HELEN)."""
    stem = Path(name).stem
    if source in (0, 1):
        return "ytf:" + re.sub(r"_\d+$", "", stem)
    return "helen:" + stem.rsplit("_", 1)[0]


def bucket(group: str) -> int:
    """Return a stable 0..9 bucket for a group name."""
    return int(hashlib.sha1(group.encode()).hexdigest(), 16) % 10


def split_indices(names: np.ndarray, source: np.ndarray) -> dict[str, np.ndarray]:
    """Split into identity-disjoint train / val / test index arrays."""
    parts: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for i, (name, src) in enumerate(zip(names, source, strict=True)):
        src = int(src)
        b = bucket(identity(str(name), src))
        if src == 3 or (src in (0, 1) and b == 0):
            parts["test"].append(i)
        elif b == 1:
            parts["val"].append(i)
        else:
            parts["train"].append(i)
    return {k: np.array(v, dtype=np.int64) for k, v in parts.items()}


def load_data(path: Path) -> dict[str, np.ndarray]:
    """Load the face crops and their landmarks."""
    with np.load(path) as d:
        data = {k: d[k] for k in ("images", "landmarks68", "source", "names")}
    if data["images"].shape[1:] != (SIZE, SIZE):
        raise SystemExit(f"{path}: expected {SIZE}x{SIZE} crops, got {data['images'].shape[1:]}")
    return data


def interocular(landmarks68: np.ndarray) -> np.ndarray:
    """Return the outer-eye-corner distance of each face."""
    return np.linalg.norm(landmarks68[:, LEFT_EYE_OUTER] - landmarks68[:, RIGHT_EYE_OUTER], axis=1)


def augment(
    images: np.ndarray,
    points: np.ndarray,
    rng: np.random.Generator,
    strength: float = 1.0,
    order: list[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Return randomly flipped, warped and photometrically changed copies of crops and points.

    `strength` scales every range and probability but the flip's (1 = full, 0.5 = mild); `order`
    is the points' flip order (FLIP_ORDER by default).
    """
    order = FLIP_ORDER if order is None else order
    k = strength
    n = len(images)
    out = np.empty((n, SIZE, SIZE), np.float32)
    pts_out = np.empty_like(points)
    c = (SIZE - 1) / 2
    for i in range(n):
        img = images[i]
        pts = points[i].copy()
        if rng.random() < 0.5:
            img = img[:, ::-1]
            pts[:, 0] = SIZE - 1 - pts[:, 0]
            pts = pts[order]
        # Scale and shift ranges cover the spread between a face detector's box and the training
        # crop (BlazeFace: crop side / box width p10-p90 1.79-2.61 around 2.14, i.e. 0.84-1.22x),
        # so detected crops look like training ones.
        scale = np.exp(rng.uniform(k * np.log(0.82), k * np.log(1.22)))
        angle = rng.uniform(-18 * k, 18 * k) if rng.random() < 0.8 else 0.0
        tx, ty = rng.uniform(-8 * k, 8 * k, size=2)
        m = cv2.getRotationMatrix2D((c, c), angle, scale)
        m[:, 2] += (tx, ty)
        border = cv2.BORDER_CONSTANT if rng.random() < 0.5 else cv2.BORDER_REPLICATE
        img = cv2.warpAffine(
            np.ascontiguousarray(img), m, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderMode=border
        )
        pts = pts @ m[:, :2].T + m[:, 2]
        if rng.random() < 0.2 * k:  # low-resolution faces (small in a webcam frame)
            f = rng.uniform(0.35, 0.8)
            small = cv2.resize(img, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
            img = cv2.resize(small, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
        if rng.random() < 0.3 * k:
            img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.4, 1.5))
        x = img.astype(np.float32)
        contrast = rng.uniform(1 - 0.45 * k, 1 + 0.45 * k)
        x = (x - x.mean()) * contrast + x.mean() + rng.uniform(-45 * k, 45 * k)
        if rng.random() < 0.3 * k:
            gamma = rng.uniform(0.7, 1.4)
            x = 255.0 * (np.clip(x, 0, 255) / 255.0) ** gamma
        if rng.random() < 0.35 * k:
            x = x + rng.normal(0, rng.uniform(2, 10), size=x.shape)
        x = np.clip(x, 0, 255)
        if rng.random() < 0.2 * k:  # webcam frames arrive as JPEG
            ok, buf = cv2.imencode(
                ".jpg", x.astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 90))]
            )
            x = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE).astype(np.float32)
        out[i] = x
        pts_out[i] = pts
    return out[..., None], pts_out


def build_model(num_keypoints: int = len(KEYPOINTS), name: str = "nose_tracker"):
    """Build a small conv net whose heatmaps are turned into keypoints by soft-argmax."""
    import keras
    from keras import layers

    def conv(x, filters, stride=1):
        x = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        return layers.ReLU()(x)

    inp = keras.Input((SIZE, SIZE, 1), name="image")
    x = layers.Rescaling(1 / 127.5, offset=-1.0)(inp)
    x = layers.Conv2D(16, 5, strides=2, padding="same", use_bias=False)(x)  # 48x48
    x = layers.ReLU()(layers.BatchNormalization()(x))
    c24 = conv(conv(x, 48, 2), 48)  # 24x24
    c12 = conv(conv(conv(c24, 96, 2), 96), 96)  # 12x12
    c6 = conv(conv(conv(c12, 160, 2), 160), 160)  # 6x6
    # Top-down path back to 24x24 so the heatmap sees both context and fine position.
    u = layers.UpSampling2D(interpolation="bilinear")(layers.Conv2D(64, 1)(c6))
    u = conv(layers.Add()([u, layers.Conv2D(64, 1)(c12)]), 64)
    u = layers.UpSampling2D(interpolation="bilinear")(layers.Conv2D(32, 1)(u))
    u = conv(layers.Add()([u, layers.Conv2D(32, 1)(c24)]), 32)
    u = conv(u, 32)
    heat = layers.Conv2D(num_keypoints, 1, name="heatmap")(u)
    # Soft-argmax with standard layers only (no custom objects in the .keras file):
    # softmax over the 24x24 cells, then a fixed Dense whose kernel holds each cell's centre.
    prob = layers.Softmax(axis=1)(layers.Reshape((HEATMAP * HEATMAP, num_keypoints))(heat))
    prob = layers.Permute((2, 1))(prob)
    cell = SIZE / HEATMAP
    centres = (np.arange(HEATMAP, dtype=np.float32) + 0.5) * cell - 0.5
    gy, gx = np.meshgrid(centres, centres, indexing="ij")
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1)
    coords = layers.Dense(2, use_bias=False, trainable=False, name="soft_argmax")
    out = coords(prob)
    coords.set_weights([grid])
    return keras.Model(inp, out, name=name)


def build_ensemble(members: list):
    """Return one model averaging the keypoints of independently trained members (one ONNX graph).

    Each member is rebuilt under its own name (nested models must be uniquely named) and gets its
    weights copied, which also drops any optimizer state.
    """
    import keras
    from keras import layers

    copies = []
    for i, member in enumerate(members):
        name = "nose_tracker" if len(members) == 1 else f"member_{i + 1}"
        copy = build_model(member.output_shape[1], name=name)
        copy.set_weights(member.get_weights())
        copies.append(copy)
    if len(copies) == 1:
        return copies[0]
    inp = keras.Input((SIZE, SIZE, 1), name="image")
    out = layers.Average(name="average")([m(inp) for m in copies])
    return keras.Model(inp, out, name="nose_tracker_ensemble")


def ensemble_members(model) -> list:
    """Return the member networks of a model built by build_ensemble (the model itself when single)."""
    nested = [layer for layer in model.layers if layer.name.startswith("member_")]
    return nested or [model]


def predict_keras(model, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """Run the Keras model on uint8 crops in batches (no model.predict: it is slow per call)."""
    outs = []
    for i in range(0, len(images), batch):
        x = images[i : i + batch, ..., None].astype(np.float32)
        outs.append(np.asarray(model(x, training=False)))
    return np.concatenate(outs)


def with_flip(predict, images: np.ndarray, order: list[int] | None = None) -> np.ndarray:
    """Average a prediction with the mirrored prediction on the mirrored crops."""
    direct = predict(images)
    flipped = predict(np.ascontiguousarray(images[:, :, ::-1]))
    flipped[..., 0] = SIZE - 1 - flipped[..., 0]
    return (direct + flipped[:, FLIP_ORDER if order is None else order]) / 2


def point_offset(predict, data: dict, idx: np.ndarray, keypoints: tuple[int, ...] = KEYPOINTS) -> np.ndarray:
    """Return the mean (prediction - label) of each keypoint on training crops, flip-averaged.

    Flip augmentation forces the network to be mirror-symmetric, but the labels are not: the
    Udacity points sit about 0.8 px right of a mirror-symmetric position and the two sources
    place the nose tip about 0.8 px apart in y. The mean residual on the training split is
    subtracted when serving (ONNX metadata `point_offset`).
    """
    pred = with_flip(predict, data["images"][idx], flip_order(keypoints))
    labels = data["landmarks68"][idx][:, list(keypoints)]
    return (pred - labels).mean(axis=0).astype(np.float32)


def error_table(pred_nose: np.ndarray, data: dict, idx: np.ndarray) -> dict:
    """Return mean / p90 nose error in pixels and / inter-ocular distance, overall and by source."""
    true = data["landmarks68"][idx, 30]
    err = np.linalg.norm(pred_nose - true, axis=1)
    norm = err / interocular(data["landmarks68"][idx])
    src = data["source"][idx]

    def row(mask):
        return {
            "n": int(mask.sum()),
            "mean_px": float(err[mask].mean()),
            "p90_px": float(np.percentile(err[mask], 90)),
            "mean_norm": float(norm[mask].mean()),
            "p90_norm": float(np.percentile(norm[mask], 90)),
        }

    table = {"all": row(np.ones(len(idx), bool))}
    for s in np.unique(src):
        table[SOURCE_KEYS[int(s)]] = row(src == s)
    return table


def calibrate_crop(detector, images: np.ndarray) -> dict:
    """Fit the training crop around the face detector's box: side / box width and centre offset / box width.

    Each 96x96 crop is padded with black to 192x192 (the training crops' own border is black
    where they leave the photo), so the face is at the size it has in a frame. Medians over the
    crops where a face is found; with none (tiny smoke-test sets) the serving defaults.
    """
    pad = SIZE // 2
    rows = []
    for crop in images:
        canvas = cv2.copyMakeBorder(crop, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
        faces = detector.detect(canvas)
        if not faces:
            continue
        f = faces[0]
        cx, cy = f.x + f.w / 2 - pad, f.y + f.h / 2 - pad
        rows.append((SIZE / f.w, (SIZE / 2 - cx) / f.w, (SIZE / 2 - cy) / f.w))
    if not rows:
        from models.tracking import DEFAULT_CROP

        s, dy = DEFAULT_CROP["crop_scale"], DEFAULT_CROP["crop_dy"]
        return {
            "n": len(images),
            "detected_fraction": 0.0,
            **DEFAULT_CROP,
            "scale_p10_p90": [s, s],
            "dy_p10_p90": [dy, dy],
        }
    r = np.array(rows)
    return {
        "n": len(images),
        "detected_fraction": round(len(r) / len(images), 4),
        "crop_scale": round(float(np.median(r[:, 0])), 3),
        "crop_dx": round(float(np.median(r[:, 1])), 3),
        "crop_dy": round(float(np.median(r[:, 2])), 3),
        "scale_p10_p90": [round(float(v), 3) for v in np.percentile(r[:, 0], [10, 90])],
        "dy_p10_p90": [round(float(v), 3) for v in np.percentile(r[:, 2], [10, 90])],
    }


def calibrate_detector(images: np.ndarray, detector_path: Path | None = None) -> dict:
    """Measure how a training crop relates to the served face detector's box (scale and offset)."""
    from models.face_detector import FaceDetector
    from models.tracking import DETECTOR

    detector = FaceDetector(detector_path or DETECTOR, name="calibration")
    return {**calibrate_crop(detector, images), "detector": detector.name}


def current_detector_name() -> str:
    """Return the name (ONNX metadata `detector`) of the face detector models/tracking.py serves."""
    from models.face_detector import FaceDetector
    from models.tracking import DETECTOR

    return FaceDetector(DETECTOR, name="calibration").name


def export_onnx(model, path: Path, metadata: dict) -> None:
    """Export the model to ONNX and store the preprocessing contract in its metadata."""
    import onnx

    model(np.zeros((2, SIZE, SIZE, 1), np.float32))
    model.export(str(path), format="onnx")
    proto = onnx.load(str(path))
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key = key
        entry.value = value if isinstance(value, str) else json.dumps(value)
    onnx.save(proto, str(path))


def onnx_metadata(path: Path) -> dict[str, str]:
    """Return an ONNX file's metadata properties."""
    import onnx

    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def crop_metadata(calib: dict) -> dict:
    """Return the ONNX metadata entries that carry a crop calibration (read by models/tracking.py)."""
    return {
        "crop_scale": calib["crop_scale"],
        "crop_dx": calib["crop_dx"],
        "crop_dy": calib["crop_dy"],
        "crop_detector": calib["detector"],
        "calibration": calib,
    }


def stamp_metadata(path: Path, metadata: dict) -> None:
    """Set metadata entries of an ONNX file in place; the graph and weights are written back unchanged."""
    import onnx

    proto = onnx.load(str(path))
    entries = {p.key: p.value for p in proto.metadata_props}
    entries.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()})
    del proto.metadata_props[:]
    for key, value in entries.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def predict_onnx(path: Path, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """Run the exported ONNX model on uint8 crops."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    outs = []
    for i in range(0, len(images), batch):
        x = images[i : i + batch, ..., None].astype(np.float32)
        outs.append(session.run(None, {name: x})[0])
    return np.concatenate(outs)


def write_fixtures(
    data: dict, test_idx: np.ndarray, out_dir: Path, per_source: int = 20, seed: int = 7
) -> None:
    """Write a few held-out crops (PNG) with their landmarks, plus two webcam-like frames."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for src in (1, 0, 3):  # held-out Udacity identities come from both Udacity CSVs
        pool = test_idx[data["source"][test_idx] == src]
        take = per_source // 2 if src in (0, 1) else per_source
        for i in sorted(rng.choice(pool, take, replace=False)):
            name = f"{SOURCE_KEYS[src]}_{i:04d}.png"
            cv2.imwrite(str(out_dir / name), data["images"][i])
            lm = data["landmarks68"][i]
            rows.append(
                {
                    "file": name,
                    "source": SOURCE_KEYS[src],
                    "original": str(data["names"][i]),
                    "nose": [round(float(v), 3) for v in lm[30]],
                    "eye_left_outer": [round(float(v), 3) for v in lm[36]],
                    "eye_right_outer": [round(float(v), 3) for v in lm[45]],
                    "landmarks68": [[round(float(a), 2), round(float(b), 2)] for a, b in lm],
                }
            )
    frames = []
    for k, row in enumerate(rows[:2] if len(rows) >= 2 else rows):
        frames.append(_write_frame(out_dir, row, k, rng))
    (out_dir / "labels.json").write_text(json.dumps({"crops": rows, "frames": frames}, indent=1) + "\n")


def _write_frame(out_dir: Path, row: dict, k: int, rng: np.random.Generator) -> dict:
    """Paste a crop, enlarged, into a 320x240 textured frame (as a webcam frame) and save it."""
    crop = cv2.imread(str(out_dir / row["file"]), cv2.IMREAD_GRAYSCALE)
    scale = 1.6
    side = int(round(SIZE * scale))
    face = cv2.resize(crop, (side, side), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:240, 0:320]
    frame = (90 + 60 * np.sin(xx / 23.0) * np.cos(yy / 31.0) + rng.normal(0, 6, (240, 320))).clip(0, 255)
    x0, y0 = (40, 50) if k == 0 else (150, 40)
    frame[y0 : y0 + side, x0 : x0 + side] = face
    name = f"frame_{k}.jpg"
    cv2.imwrite(str(out_dir / name), frame.astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 90])

    def place(p):
        return [round((p[0] + 0.5) * scale - 0.5 + x0, 2), round((p[1] + 0.5) * scale - 0.5 + y0, 2)]

    return {
        "file": name,
        "from": row["file"],
        "width": 320,
        "height": 240,
        "face_box": [x0, y0, side, side],
        "nose": place(row["nose"]),
        "eye_left_outer": place(row["eye_left_outer"]),
        "eye_right_outer": place(row["eye_right_outer"]),
    }


def textured_frame(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """Return a face-free textured backdrop for pasting faces into."""
    yy, xx = np.mgrid[0:height, 0:width]
    fx, fy = rng.uniform(15, 45, size=2)
    base = 110 + 50 * np.sin(xx / fx) * np.cos(yy / fy) + rng.normal(0, 8, (height, width))
    return base.clip(0, 255).astype(np.uint8)


def served_crop_points(onnx_path: Path, images: np.ndarray, **options) -> np.ndarray:
    """Nose tips of 96x96 crops as the server computes them (views averaged, offset subtracted)."""
    from models.tracking import NoseModel

    model = NoseModel("tracking", onnx_path, **options)
    return np.concatenate([model.predict(model.views(images[i : i + 64])) for i in range(0, len(images), 64)])


VIEW_SETS = {
    "none": ((0, 0),),
    "2 px diagonal (/)": ((0, 0), (2, -2), (-2, 2)),
    "2 px diagonal (\\)": ((0, 0), (2, 2), (-2, -2)),
    "2 px vertical": ((0, 0), (0, 2), (0, -2)),
    "2 px, 4 directions": ((0, 0), (2, 0), (-2, 0), (0, 2), (0, -2)),
    "1 px, 4 directions": ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)),
}


def compare_view_sets(onnx_path: Path, data: dict, split: dict) -> list[dict]:
    """Validation mean error / IOD of each candidate set of shifted views (all flip-averaged)."""
    rows = []
    for name, shifts in VIEW_SETS.items():
        row = {"name": name, "shifts": [list(v) for v in shifts]}
        idx = split["val"]
        points = served_crop_points(onnx_path, data["images"][idx], shifts=shifts)
        row["val"] = error_table(points, data, idx)["all"]["mean_norm"]
        rows.append(row)
    return rows


def evaluate_served(onnx_path: Path, data: dict, idx: np.ndarray, seed: int = 3) -> dict:
    """Run the served pipeline (models/tracking.py) on held-out crops, alone and pasted into frames."""
    from models.tracking import NoseModel

    model = NoseModel("tracking", onnx_path)
    model.warmup()
    rng = np.random.default_rng(seed)
    rows: dict[str, dict] = {k: {"n": 0, "errors": [], "modes": {}} for k in ("crop", "crop_detect", "frame")}

    def record(key: str, result: dict, nose: np.ndarray, size: tuple[int, int], iod: float) -> None:
        row = rows[key]
        row["n"] += 1
        if not result["found"]:
            row["modes"]["not found"] = row["modes"].get("not found", 0) + 1
            return
        row["modes"][result["mode"]] = row["modes"].get(result["mode"], 0) + 1
        x = result["x"] * size[0] - 0.5
        y = result["y"] * size[1] - 0.5
        row["errors"].append(float(np.hypot(x - nose[0], y - nose[1]) / iod))

    iods = interocular(data["landmarks68"][idx])
    for i, iod in zip(idx, iods, strict=True):
        crop = data["images"][i]
        nose = data["landmarks68"][i, 30]
        record("crop", model(crop, detect=False), nose, (SIZE, SIZE), iod)
        record("crop_detect", model(crop), nose, (SIZE, SIZE), iod)
        # The same face enlarged into a 640x480 frame at a random place, as a webcam would see it.
        scale = rng.uniform(1.5, 3.0)
        side = round(SIZE * scale)
        frame = textured_frame(640, 480, rng)
        x0, y0 = int(rng.integers(0, 640 - side)), int(rng.integers(0, 480 - side))
        frame[y0 : y0 + side, x0 : x0 + side] = cv2.resize(crop, (side, side), interpolation=cv2.INTER_CUBIC)
        s = side / SIZE
        placed = (nose + 0.5) * s - 0.5 + (x0, y0)
        record("frame", model(frame), placed, (640, 480), iod * s)
    out = {}
    for key, row in rows.items():
        errors = np.array(row["errors"])
        out[key] = {
            "n": row["n"],
            "found": len(errors) / max(row["n"], 1),
            "modes": row["modes"],
            "mean_norm": float(errors.mean()) if len(errors) else float("nan"),
            "p90_norm": float(np.percentile(errors, 90)) if len(errors) else float("nan"),
        }
    return out


def previous_history(card: Path | None) -> list[list[dict]]:
    """Read the training-log tables of an existing model card, one list per member."""
    if card is None or not card.is_file():
        return []
    members: list[list[dict]] = []
    for line in card.read_text().splitlines():
        m = re.match(r"^\| (\d+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) % \|$", line)
        if m:
            epoch, loss, px, norm = m.groups()
            if not members or int(epoch) <= members[-1][-1]["epoch"]:
                members.append([])  # the epochs start again: the next member's table
            members[-1].append(
                {"epoch": int(epoch), "loss": float(loss), "val_px": float(px), "val_norm": float(norm) / 100}
            )
    return members


def member_records(onnx_path: Path, card: Path | None) -> list[dict]:
    """Return how each member of an exported model was trained (seed, minutes, training log).

    Models exported before ensembles carry no `members` metadata: their card says it.
    """
    meta = onnx_metadata(onnx_path) if onnx_path.is_file() else {}
    if "members" in meta:
        return json.loads(meta["members"])
    text = card.read_text() if card is not None and card.is_file() else ""
    seed = re.search(r"--seed (\d+)", text)
    minutes = re.search(r" in ([\d.]+) min", text)
    logs = previous_history(card)
    return [
        {
            "seed": int(seed.group(1)) if seed else 1,
            "history": logs[0] if logs else [],
            "minutes": float(minutes.group(1)) if minutes else float("nan"),
            "resumed": "stage 2 in" in text,
        }
    ]


def fmt_row(name: str, r: dict) -> str:
    return (
        f"| {name} | {r['n']} | {r['mean_px']:.2f} | {r['p90_px']:.2f} | "
        f"{100 * r['mean_norm']:.2f} % | {100 * r['p90_norm']:.2f} % |"
    )


# The served figures with the OpenCV Haar cascade, the detector before BlazeFace (this card at
# commit f114236, same evaluate_served), and the detectors compared in models/face_detector.md.
HAAR_BEFORE = (
    "With the Haar cascade that served before (this card's figures until BlazeFace), detection on",
    "crops answered 99.5 % at 5.70 % mean error, and pasted faces 97.2 % at 10.43 % (p90 9.87 %):",
    "its false boxes, larger than the face, were answered first. On the held-out faces pasted",
    "1-3x into frames, BlazeFace finds 98.7 % with 1 false box, the cascade 92.6 % with 31; detection",
    "takes about a third of the cascade's time on a 640x480 frame and a fifth on 320x240",
    "(models/face_detector.md has both detectors' figures and timings).",
)


def detector_label(name: str) -> str:
    """Return a readable name for a face detector's metadata name."""
    labels = {
        "blazeface_full_range": "MediaPipe's BlazeFace (full range)",
        "blazeface_short_range": "MediaPipe's BlazeFace (short range)",
    }
    return labels.get(name, f"`{name}`")


def whole_frames_text(calib: dict) -> list[str]:
    """Return the card's lines on the face detector and the crop calibration."""
    from models.tracking import DEFAULT_CROP

    name = calib.get("detector", "?")
    default = " / ".join(str(DEFAULT_CROP[k]) for k in ("crop_scale", "crop_dx", "crop_dy"))
    lines = [
        f"Faces are found with {detector_label(name)}, converted to ONNX by",
        "`training/face_detector.py` (`models/face_detector.onnx`, decoded by models/face_detector.py,",
        "no TensorFlow). Its card, [models/face_detector.md](face_detector.md), has the provenance",
        "(Apache-2.0), the detection figures and the comparison with the OpenCV Haar cascade that",
        "served before.",
        "",
    ]
    if calib.get("detected_fraction"):
        dy = (
            f" (dy p10-p90 {calib['dy_p10_p90'][0]}-{calib['dy_p10_p90'][1]})"
            if "dy_p10_p90" in calib
            else ""
        )
        measured = (
            f"The crop around a detector box is calibrated on this model's {calib['n']:,} training crops, "
            "each padded with black to 192x192 so that the face has the size it has in a frame (a face "
            f"was found in {100 * calib['detected_fraction']:.1f} %): crop side = {calib['crop_scale']} x box "
            f"width (p10-p90 {calib['scale_p10_p90'][0]}-{calib['scale_p10_p90'][1]}), centre offset "
            f"({calib['crop_dx']}, {calib['crop_dy']}) x box width{dy}."
        )
    else:
        measured = (
            "The detector found no face in the training crops (a tiny set), so the crop calibration "
            f"is the serving default ({default})."
        )
    paragraph = (
        f"{measured} These values are in the ONNX metadata (`crop_scale`, `crop_dx`, `crop_dy`, and "
        f"`crop_detector` = `{name}`); models/tracking.py applies them when `crop_detector` names the "
        f"detector it serves, and otherwise its `DEFAULT_CROP` ({default}, the same measurement on all "
        "5,432 crops, in models/face_detector.md)."
    )
    # Wrap without splitting "99.7 %" or "2.142 / 0.014" (no-break spaces, restored after).
    paragraph = paragraph.replace(" %", "\u00a0%").replace(" / ", "\u00a0/\u00a0")
    wrapped = textwrap.wrap(paragraph, 96, break_long_words=False, break_on_hyphens=False)
    lines += [line.replace("\u00a0", " ") for line in wrapped]
    return lines


def view_set_lines(rows: list[dict]) -> list[str]:
    """Card lines comparing the candidate sets of shifted views (the served one is validation's best)."""
    if not rows:
        return []
    lines = [
        "",
        "Shifted views (each also mirrored) of this model, compared on the validation split only",
        "(`SHIFTS` in models/tracking.py is the served set; the table above is its held-out error):",
        "",
        "| views | validation mean / IOD |",
        "| --- | --- |",
    ]
    from models.tracking import SHIFTS

    served = [list(v) for v in SHIFTS]
    for row in rows:
        mark = " **served**" if row["shifts"] == served else ""
        lines.append(f"| {row['name']} ({2 * len(row['shifts'])} passes){mark} | {100 * row['val']:.2f} % |")
    return [*lines, ""]


# Recipes and ensembles tried to bring the error under 5 % (2026-11-21), each measured on the
# validation split only (served views, label offset subtracted); the held-out split was measured
# once, for the choice. Columns: variant, ONNX passes per crop, validation mean / IOD, CPU ms per crop.
VARIANTS: tuple[tuple[str, str, str, str], ...] = (
    ("10 points, 1 net (seed 1, the model served before), flip", "2", "5.12 %", "3.1"),
    ("the same, flip + 2 px diagonal shifts (served before)", "6", "5.05 %", "9.0"),
    ("10 points, 1 net (seed 2), flip", "2", "5.02 %", "3.1"),
    ("the same, flip + 2 px diagonal shifts", "6", "4.93 %", "9.0"),
    ("10 points, 2 nets (seeds 1, 2) in one graph, flip", "4", "4.96 %", "5.9"),
    ("the same, flip + 2 px diagonal shifts", "12", "4.93 %", "17.0"),
    ("**68 points, 1 net (seed 1), flip (served)**", "2", "4.89 %", "3.3"),
    ("the same, flip + 2 px diagonal shifts", "6", "4.85 %", "9.8"),
    ("68 points, 1 net (seed 2), flip", "2", "4.98 %", "3.3"),
    ("the same, flip + 2 px diagonal shifts", "6", "4.85 %", "9.8"),
    ("68 points, 2 nets (seeds 1, 2) in one graph, flip", "4", "4.84 %", "6.6"),
    ("the same, flip + 2 px diagonal shifts", "12", "4.79 %", "18.0"),
)
VARIANTS_CHOICE = (
    "The rule, fixed before the second 68-point net was trained: serve the cheapest configuration "
    "whose validation error is at most 5 % with every seed tried. One 68-point net with flip "
    "averaging meets it (4.89 % and 4.98 %) at 2 passes; the seed-1 net (the command's default) "
    "is served. Two nets in one graph or shifted views lower validation error by 0.05-0.1 point "
    "at 2-6x the cost. Averaging the 10- and the 68-point nets together did no better (4.84-4.96 %). "
    "Serving cost of the choice: 3.3 ms of CPU per crop with `detect: false` and 8.0 ms with detection, "
    "against 9.0 and 13.8 ms for the model and views served before. "
    "The model was not retrained on training + validation: the seed spread (0.09 point) is as large "
    "as the gain to expect, and such a model could no longer be checked on validation."
)


def variants_lines() -> list[str]:
    """Card lines listing the variants tried and how validation chose among them."""
    if not VARIANTS:
        return []
    lines = [
        "Variants tried (validation only; CPU ms per 96x96 crop through models/tracking.py,",
        "`detect: false`, time.process_time over 300 crops, 1 ONNX thread):",
        "",
        "| variant | passes | validation mean / IOD | CPU ms / crop |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {name} | {passes} | {val} | {ms} |" for name, passes, val, ms in VARIANTS]
    wrapped = textwrap.wrap(VARIANTS_CHOICE, 96, break_long_words=False, break_on_hyphens=False)
    return [*lines, "", *wrapped, ""]


def served_views_text() -> str:
    """Describe the test-time views models/tracking.py averages (`SHIFTS`, each also mirrored)."""
    from models.tracking import SHIFTS

    if len(SHIFTS) == 1:
        return "each crop averaged with its mirror image (2 views)"
    moves = ", ".join(f"({dx}, {dy})" for dx, dy in SHIFTS[1:])
    return (
        f"each crop averaged over {2 * len(SHIFTS)} views: itself and moved by {moves} px, each also mirrored"
    )


def member_timing(record: dict) -> str:
    """Return a member's training time as the card states it."""
    return (
        f"stage 2 in {record['minutes']:.1f} min" if record.get("resumed") else f"{record['minutes']:.1f} min"
    )


def write_card(
    path: Path, *, args, split: dict, results: dict, calib: dict, members: list, params: int
) -> None:
    """Write the model card with the held-out figures and how to reproduce them."""
    sizes = {k: len(v) for k, v in split.items()}
    served = results.get("served_crops", results["onnx_flip"])
    n = len(members)
    keypoints = results["keypoints"]
    seeds = [m["seed"] for m in members]
    command = (
        f"python -m training.tracking --data ../shared/data/faces/faces_96.npz --epochs {args.epochs} "
        f"--fine-epochs {args.fine_epochs} --seed {seeds[0]}"
        + (f" --points {len(keypoints)}" if len(keypoints) == 68 else "")
        + (f" --members {n}" if n > 1 else "")
    )
    if n == 1:
        trained = (
            f"{args.epochs} + {args.fine_epochs} epochs, {member_timing(members[0]).replace('min', 'min,')}"
        )
        net = f"A small CNN ({params / 1e6:.2f} M parameters) turns"
    else:
        timings = "; ".join(f"seed {m['seed']}: {member_timing(m)}" for m in members)
        trained = f"{n} nets of {args.epochs} + {args.fine_epochs} epochs each ({timings}),"
        net = (
            f"{n} small CNNs ({params / n / 1e6:.2f} M parameters each, trained alike from seeds "
            f"{', '.join(map(str, seeds))}; one ONNX graph averages their outputs) turn"
        )
    lines = [
        "# Nose tracker (`tracking`)",
        "",
        f"Card written {dt.date.today().isoformat()}. Trained by `training/tracking.py` on CPU "
        f"({args.threads} TensorFlow threads): {trained}",
        "on a 2-core machine shared with other jobs (alone it is several times faster).",
        "",
        "Reproduce ("
        + (f"{n} nets, each " if n > 1 else "")
        + "both stages, then the evaluation and this card):",
        "",
        "```",
        command,
        "```",
        "",
        "Re-measure the committed model without training (recalibrates the face crop when the served",
        "face detector changed, re-stamping `models/tracking.onnx`'s metadata, then rewrites this card):",
        "",
        "```",
        "python -m training.tracking --data ../shared/data/faces/faces_96.npz --evaluate-only",
        "```",
        "",
        "Files: `models/tracking.keras` (Keras 3), `models/tracking.onnx` (served by ONNX Runtime).",
        "",
        "## What it does",
        "",
        f"{net} a 96x96 gray face crop into heatmaps for {len(keypoints)} facial",
        "points; a soft-argmax (softmax over the 24x24 cells, then the expected cell centre) reads",
        "each point's (x, y) with sub-pixel precision. Point 0 is the nose tip (68-point landmark 30);",
        (
            "the other 67 landmarks are auxiliary targets (denser supervision than 10 points; see below)."
            if len(keypoints) == 68
            else f"the others ({', '.join(str(k) for k in keypoints[1:])}) are auxiliary targets."
        ),
        "",
        "- Input: `image`, float32 (N, 96, 96, 1), gray values 0..255 (the model rescales to -1..1).",
        "  96x96 gray is the data's native form; the original service's 112x112 RGB /255 NCHW was not kept.",
        f"- Output: float32 (N, {len(keypoints)}, 2), (x, y) in the crop's pixel coordinates (0-based pixel centres).",
        "- Serving averages the crop's prediction with the mirrored crop's (flip test-time augmentation).",
        "",
        "## Data and split",
        "",
        "`faces_96.npz` (see its PROVENANCE.md): Udacity CVND P1 YouTube-Faces frames (train and test",
        "CSVs) and 300-W HELEN train/test, 96x96 gray crops with 68 landmarks.",
        "",
        "The Udacity train and test files share all 347 identities, so their own split is not a held-out",
        "test. The held-out split here is identity-disjoint and fixed:",
        "",
        "- the whole 300-W HELEN testset (330 faces);",
        "- every Udacity image (from both CSVs) of the identities whose SHA-1 of the name is 0 mod 10.",
        "",
        "Validation (monitoring only): Udacity identities and HELEN-train photos with SHA-1 1 mod 10.",
        f"Sizes: train {sizes['train']}, validation {sizes['val']}, held-out {sizes['test']}.",
        "",
        "Augmentation (per epoch, fresh): horizontal flip (x mirrored, left/right points swapped),",
        "rotation +-18 deg, scale 0.82-1.22, shift +-8 px (constant or replicated border), brightness,",
        "contrast and gamma, Gaussian blur, Gaussian noise, low-resolution resampling and JPEG.",
        f"Stage 1: {args.epochs} epochs with that augmentation (AdamW, warm-up to {args.lr}, cosine decay).",
        f"Stage 2: {args.fine_epochs} epochs with every range and probability halved (flip kept), from",
        f"{args.fine_lr} cosine-decayed, so the net settles on crops like the held-out ones.",
        "",
        "Label offset: flip augmentation makes the net mirror-symmetric, but the labels are not quite:",
        "the mean residual (prediction - label) on the training split, flip-averaged, is stored in",
        "the ONNX metadata (`point_offset`) and subtracted when serving. For the nose tip it is",
        f"({results['point_offset_nose'][0]}, {results['point_offset_nose'][1]}) px; the Udacity points",
        "sit about 0.8 px right of a mirror-symmetric position, and HELEN places the nose tip about",
        "0.8 px lower than Udacity (measured on a first run; see `point_offset`).",
        "",
        "## Held-out error of the nose tip",
        "",
        "Error = Euclidean distance to the annotated nose tip, in 96x96 pixels and divided by the",
        "inter-ocular distance (outer eye corners, landmarks 36 and 45).",
        "",
        f"Served configuration (ONNX; {served_views_text()}; label offset subtracted):",
        "",
        "| split | n | mean px | p90 px | mean / IOD | p90 / IOD |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    labels = {
        "all": "held-out, all",
        "udacity_train": "Udacity (train CSV, held-out ids)",
        "udacity_test": "Udacity (test CSV, held-out ids)",
        "helen_test": "300-W HELEN testset",
    }
    lines += [fmt_row(labels.get(k, k), r) for k, r in served.items()]
    lines += [
        "",
        f"Without flip averaging or offset (ONNX, one pass): mean {results['onnx']['all']['mean_px']:.2f} px, "
        f"{100 * results['onnx']['all']['mean_norm']:.2f} % IOD; flip-averaged without the offset: "
        f"{results['onnx_flip_raw']['all']['mean_px']:.2f} px, "
        f"{100 * results['onnx_flip_raw']['all']['mean_norm']:.2f} % IOD; flip-averaged with the offset, "
        f"no shifted views: {results['onnx_flip']['all']['mean_px']:.2f} px, "
        f"{100 * results['onnx_flip']['all']['mean_norm']:.2f} % IOD. Keras and ONNX agree to "
        f"{results['max_onnx_keras_px']:.4f} px.",
        *view_set_lines(results.get("view_sets", [])),
        *variants_lines(),
        f"Target: mean normalised error <= 5 %: {'met' if served['all']['mean_norm'] <= 0.05 else 'NOT met'}.",
        "",
        "## Whole frames (served by models/tracking.py)",
        "",
        *whole_frames_text(calib),
        "",
        "The served pipeline on the held-out split (`evaluate_served` in this script): each",
        "held-out crop as it is, with `detect: false` and with detection, and pasted (enlarged",
        "1.5-3x, random place) into a textured 640x480 frame. Error / IOD of the answer's x, y:",
        "",
        "| input | n | answered | mean / IOD | p90 / IOD | path taken |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    served_names = {
        "crop": "crop, `detect: false`",
        "crop_detect": "crop, detection on",
        "frame": "face pasted into a 640x480 frame",
    }
    for key, row in results.get("served", {}).items():
        modes = ", ".join(f"{k} {v}" for k, v in sorted(row["modes"].items()))
        lines.append(
            f"| {served_names[key]} | {row['n']} | {100 * row['found']:.1f} % | {100 * row['mean_norm']:.2f} % "
            f"| {100 * row['p90_norm']:.2f} % | {modes} |"
        )
    lines += [
        "",
        *HAAR_BEFORE,
        "",
        "## Limits",
        "",
        "- Trained on near-frontal faces (YouTube Faces, Flickr); profiles, strong tilt (> ~20 deg)",
        "  and heavy occlusion are outside the data, and the face detector misses profiles too.",
        "- Gray input only; colour is discarded.",
        "- The data's licences are research-only (see PROVENANCE.md).",
        "",
        "## Training log",
        "",
        f"Epochs 1-{args.epochs} are stage 1, the rest stage 2. Validation: one pass, no flip, no offset.",
    ]
    if getattr(args, "assemble", None):
        lines += [
            "This model's nets were trained by separate runs of the same code (`--seed "
            + "`, `--seed ".join(map(str, seeds))
            + "`, one net each) and averaged with `--assemble`; the command above does it in one run.",
        ]
    for k, record in enumerate(members):
        lines += [""]
        if n > 1:
            lines += [f"Net {k + 1} (seed {record['seed']}):", ""]
        if record.get("resumed"):
            lines += [
                "Its stage 1 is an earlier run of the same command (its log is kept here); stage 2",
                "was run from its saved model with `--resume` (same code, stage 2 seeded apart).",
                "",
            ]
        lines += [
            "| epoch | train loss | val mean px | val mean / IOD |",
            "| --- | --- | --- | --- |",
        ]
        lines += [
            f"| {h['epoch']} | {h['loss']:.3f} | {h['val_px']:.2f} | {100 * h['val_norm']:.2f} % |"
            for h in record["history"]
        ]
    path.write_text("\n".join(lines) + "\n")


def train(args: argparse.Namespace) -> dict:
    """Train, evaluate on the held-out split, export and write the card; return the results."""
    start = time.time()
    data = load_data(args.data)
    split = split_indices(data["names"], data["source"])
    if args.write_fixtures:
        write_fixtures(data, split["test"], args.write_fixtures)
        print(f"fixtures written to {args.write_fixtures}")
        return {}

    import keras
    import tensorflow as tf

    tf_setup.configure(args.threads, args.seed)
    for k, v in split.items():
        print(f"{k}: {len(v)} by source {np.bincount(data['source'][v], minlength=4).tolist()}", flush=True)
    train_idx = split["train"]
    if args.limit:
        train_idx = train_idx[: args.limit]
    images = data["images"]
    keypoints = ALL_POINTS if args.points == 68 else KEYPOINTS
    order = flip_order(keypoints)
    points = data["landmarks68"][:, list(keypoints)].astype(np.float32)
    x_val = images[split["val"]]

    # Nose tip weighs as much as the nine auxiliary points together.
    weights = np.full(len(keypoints), 1.0 / (len(keypoints) - 1), np.float32)
    weights[NOSE] = 1.0
    w = tf.constant(weights[None, :, None])

    def loss(y_true, y_pred):
        return tf.reduce_sum(tf.abs(y_true - y_pred) * w, axis=[1, 2]) / 2.0

    def run_stage(
        model, history: list, *, epochs: int, lr: float, strength: float, warmup: bool, seed: int, first: int
    ):
        """Train `epochs` epochs with fresh augmentation each, cosine-decayed learning rate."""
        if epochs <= 0:
            return
        steps = epochs * int(np.ceil(len(train_idx) / args.batch))
        if warmup:
            schedule = keras.optimizers.schedules.CosineDecay(
                lr * 0.1, steps, warmup_target=lr, warmup_steps=min(300, steps // 10), alpha=0.01
            )
        else:
            schedule = keras.optimizers.schedules.CosineDecay(lr, steps, alpha=0.02)
        model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=1e-4), loss=loss)
        rng = np.random.default_rng(seed)
        for epoch in range(first, first + epochs):
            t0 = time.time()
            shuffled = rng.permutation(train_idx)
            x, y = augment(images[shuffled], points[shuffled], rng, strength=strength, order=order)
            hist = model.fit(x, y, batch_size=args.batch, epochs=1, verbose=0, shuffle=False)
            pred = predict_keras(model, x_val)[:, NOSE]
            table = error_table(pred, data, split["val"])["all"]
            history.append(
                {
                    "epoch": epoch + 1,
                    "loss": float(hist.history["loss"][-1]),
                    "val_px": table["mean_px"],
                    "val_norm": table["mean_norm"],
                }
            )
            print(
                f"epoch {epoch + 1} loss {history[-1]['loss']:.3f} val {table['mean_px']:.2f} px "
                f"{100 * table['mean_norm']:.2f} % IOD ({time.time() - t0:.0f} s, "
                f"total {(time.time() - start) / 60:.1f} min)",
                flush=True,
            )

    members, trained = [], []
    if args.assemble:
        # Members trained earlier by this script (separate runs): average them, train nothing.
        for path in args.assemble:
            members.append(keras.saving.load_model(path, compile=False))
            trained += member_records(path.with_suffix(".onnx"), path.with_suffix(".md"))
            print(f"member {path}: seed {trained[-1]['seed']}", flush=True)
    for k in range(0 if args.assemble else args.members):
        seed = args.seed + k
        t0 = time.time()
        keras.utils.set_random_seed(seed)
        record: dict = {"seed": seed, "history": []}
        if args.resume and k == 0:
            # Stage 1 done by an earlier run of this script: start from its model and training log.
            model = keras.saving.load_model(args.resume, compile=False)
            record["history"] = (previous_history(args.resume.with_suffix(".md")) or [[]])[0][: args.epochs]
            record["resumed"] = True
            print(f"resumed stage 1 from {args.resume} ({len(record['history'])} logged epochs)", flush=True)
        else:
            model = build_model(len(keypoints))
            print(f"member {k + 1}, seed {seed}, parameters: {model.count_params()}", flush=True)
            # Stage 1: full augmentation, warm-up then cosine decay.
            run_stage(
                model,
                record["history"],
                epochs=args.epochs,
                lr=args.lr,
                strength=1.0,
                warmup=True,
                seed=seed,
                first=0,
            )
        # Stage 2: milder augmentation at a low learning rate, closer to clean held-out crops.
        run_stage(
            model,
            record["history"],
            epochs=args.fine_epochs,
            lr=args.fine_lr,
            strength=0.5,
            warmup=False,
            seed=seed + 1000,
            first=args.epochs,
        )
        record["minutes"] = round((time.time() - t0) / 60, 1)
        members.append(model)
        trained.append(record)
    if args.assemble:  # the members' own keypoints
        keypoints = ALL_POINTS if members[0].output_shape[1] == len(ALL_POINTS) else KEYPOINTS
        order = flip_order(keypoints)
    model = build_ensemble(members)
    offset = point_offset(lambda a: predict_keras(model, a), data, train_idx, keypoints)
    print(f"point offset (pred - label on train, px): {offset.round(3).tolist()}", flush=True)

    out_dir = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    keras_path, onnx_path = out_dir / "tracking.keras", out_dir / "tracking.onnx"
    # build_ensemble made uncompiled copies: the optimizer state would triple the file.
    model.save(keras_path)
    calib = calibrate_detector(images[train_idx])
    print(f"detector calibration: {calib}", flush=True)
    version = dt.datetime.now().strftime("%Y%m%d-%H%M")
    export_onnx(
        model,
        onnx_path,
        {
            "version": f"tracking-{version}",
            "input": "float32 (N,96,96,1) gray 0..255",
            "output": f"float32 (N,{len(keypoints)},2) keypoints x,y in 96x96 pixel coordinates, 0 = nose tip",
            "keypoints": list(keypoints),
            "flip_order": order,
            **crop_metadata(calib),
            "point_offset": offset.round(4).tolist(),
            # How each member was trained (seed, minutes, training log), kept for the card.
            "members": trained,
            "recipe": {
                "epochs": args.epochs,
                "fine_epochs": args.fine_epochs,
                "assembled": bool(args.assemble),
            },
        },
    )
    if args.no_report:
        # Experiments compare recipes on validation; the held-out split is measured for the final model only.
        return {}
    return report(args, data, split, model, calib)


def report(args, data: dict, split: dict, model, calib: dict) -> dict:
    """Measure the held-out error (Keras, ONNX, served pipeline) and write the model card."""
    onnx_path = args.out_dir / "tracking.onnx"
    test_idx = split["test"]
    x_test = data["images"][test_idx]
    keras_pred = predict_keras(model, x_test)
    onnx_pred = predict_onnx(onnx_path, x_test)
    meta = onnx_metadata(onnx_path)
    flip_pred = with_flip(lambda a: predict_onnx(onnx_path, a), x_test, json.loads(meta["flip_order"]))
    offset = np.array(json.loads(meta.get("point_offset", "0")), np.float32)
    results = {
        "keypoints": json.loads(meta["keypoints"]),
        "keras": error_table(keras_pred[:, NOSE], data, test_idx),
        "onnx": error_table(onnx_pred[:, NOSE], data, test_idx),
        "onnx_flip_raw": error_table(flip_pred[:, NOSE], data, test_idx),
        "onnx_flip": error_table((flip_pred - offset)[:, NOSE], data, test_idx),
        # The served crop regression: flip and 2-px shift views averaged, offset subtracted.
        "served_crops": error_table(served_crop_points(onnx_path, x_test), data, test_idx),
        # Candidate sets of shifted views, on validation only (which chooses).
        "view_sets": compare_view_sets(onnx_path, data, split),
        "point_offset_nose": [round(float(v), 3) for v in np.broadcast_to(offset, flip_pred.shape[1:])[NOSE]],
        "max_onnx_keras_px": float(np.abs(keras_pred - onnx_pred).max()),
        "served": evaluate_served(onnx_path, data, test_idx),
    }
    print(json.dumps(results, indent=1), flush=True)
    if args.card:
        write_card(
            args.card,
            args=args,
            split=split,
            results=results,
            calib=calib,
            members=member_records(onnx_path, args.card),
            params=model.count_params(),
        )
    print(f"done: {onnx_path}, card {args.card}", flush=True)
    return results


def evaluate_only(args: argparse.Namespace) -> dict:
    """Re-measure the exported model and rewrite its card, keeping the card's training log."""
    import keras

    tf_setup.configure(args.threads, args.seed)
    data = load_data(args.data)
    split = split_indices(data["names"], data["source"])
    model = keras.saving.load_model(args.out_dir / "tracking.keras", compile=False)
    onnx_path = args.out_dir / "tracking.onnx"
    meta = onnx_metadata(onnx_path)
    calib = json.loads(meta.get("calibration", "{}"))
    detector = current_detector_name()
    if meta.get("crop_detector") != detector or calib.get("detector") != detector:
        # Calibrated for another face detector (or not at all): the crop is deterministic and
        # needs no training, so measure it for the served detector and store it in the model.
        print(
            f"crop calibrated for {meta.get('crop_detector', 'an older detector')}; recalibrating", flush=True
        )
        calib = calibrate_detector(data["images"][split["train"]])
        print(f"detector calibration: {calib}", flush=True)
        stamp_metadata(onnx_path, crop_metadata(calib))
    # The card describes the run that trained the model, not this command's defaults.
    if "recipe" in meta:
        recipe = json.loads(meta["recipe"])
        args.epochs, args.fine_epochs = recipe["epochs"], recipe["fine_epochs"]
        args.assemble = [Path("member.keras")] if recipe.get("assembled") else []
    else:  # exported before the recipe was stored: its card has it
        previous = args.card.read_text() if args.card and args.card.is_file() else ""
        epochs = re.search(r"(\d+) \+ (\d+) epochs", previous)
        if epochs:
            args.epochs, args.fine_epochs = int(epochs.group(1)), int(epochs.group(2))
    return report(args, data, split, model, calib)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, required=True, help="faces_96.npz (see PROVENANCE.md)")
    p.add_argument("--out-dir", type=Path, default=ROOT / "models", help="where tracking.keras/.onnx go")
    p.add_argument(
        "--card", default=str(ROOT / "models" / "tracking.md"), help="model card path ('' to skip)"
    )
    p.add_argument("--epochs", type=int, default=24, help="stage 1 epochs (full augmentation)")
    p.add_argument("--fine-epochs", type=int, default=8, help="stage 2 epochs (mild augmentation)")
    p.add_argument("--fine-lr", type=float, default=5e-4)
    p.add_argument(
        "--resume", type=Path, default=None, help="stage-1 .keras of an earlier run: run stage 2 only"
    )
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=1, help="seed of the first member (the next ones count up)")
    p.add_argument(
        "--points",
        type=int,
        choices=(10, 68),
        default=68,
        help="keypoints regressed: all 68 (the nose tip first) or 10 (nose + 9)",
    )
    p.add_argument(
        "--members",
        type=int,
        default=1,
        help="independently trained nets averaged in one graph (seeds count up)",
    )
    p.add_argument(
        "--assemble",
        type=Path,
        nargs="+",
        default=[],
        help="average these trained tracking.keras files (with their .onnx or .md beside) instead of training",
    )
    p.add_argument("--threads", type=int, default=2, help="TensorFlow intra-op threads")
    p.add_argument("--limit", type=int, default=0, help="use only the first N training samples (smoke tests)")
    p.add_argument("--write-fixtures", type=Path, default=None, help="only write held-out test fixtures here")
    p.add_argument(
        "--no-report", action="store_true", help="train and export only: no held-out measurement, no card"
    )
    p.add_argument(
        "--evaluate-only",
        action="store_true",
        help="re-measure the exported model in --out-dir and rewrite the card (no training)",
    )
    args = p.parse_args(argv)
    args.card = Path(args.card) if args.card else None
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.evaluate_only:
        evaluate_only(args)
    else:
        train(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
