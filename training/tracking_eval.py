"""Measure the nose tracker: errors per split and source, the face-detector crop calibration, the served pipeline."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np

from training.export import onnx_metadata
from training.tracking_data import SIZE, SOURCE_KEYS, interocular, textured_frame


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


def crop_metadata(calib: dict) -> dict:
    """Return the ONNX metadata entries that carry a crop calibration (read by models/tracking.py)."""
    return {
        "crop_scale": calib["crop_scale"],
        "crop_dx": calib["crop_dx"],
        "crop_dy": calib["crop_dy"],
        "crop_detector": calib["detector"],
        "calibration": calib,
    }


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


def perturbed_validation(onnx_path: Path, data: dict, split: dict, seed: int = 5) -> dict:
    """Served error on validation crops put through the full in-the-wild augmentation (fixed seed).

    Validation is in-distribution; warped, occluded, unevenly lit and blurred copies of it say how
    a model copes with what in-the-wild photos add, without touching any evaluation set.
    """
    from training.tracking_data import augment, flip_order

    idx = split["val"]
    rng = np.random.default_rng(seed)
    order = flip_order(tuple(range(68)))
    x, y = augment(
        data["images"][idx], data["landmarks68"][idx].astype(np.float32), rng, order=order, wild=True
    )
    points = served_crop_points(onnx_path, np.clip(np.rint(x[..., 0]), 0, 255).astype(np.uint8))
    norm = np.linalg.norm(points - y[:, 30], axis=1) / interocular(y)
    return {"n": len(idx), "mean_norm": float(norm.mean()), "p90_norm": float(np.percentile(norm, 90))}


def evaluate_served(
    onnx_path: Path, data: dict, idx: np.ndarray, seed: int = 3, detector: Path | None = None
) -> dict:
    """Run the served pipeline (models/tracking.py) on held-out crops, alone and pasted into frames.

    `detector`: a face detector file other than the default (models/face_detector.onnx).
    """
    from models.tracking import NoseModel

    model = NoseModel("tracking", onnx_path, **({"detector": str(detector)} if detector else {}))
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
