"""Smoke test of the nose-tracker training script on the committed fixtures (seconds, TF only)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "tracking"


def fixture_npz(path: Path) -> Path:
    """Build a tiny faces_96.npz-shaped file from the committed crops."""
    rows = json.loads((DATA / "labels.json").read_text())["crops"]
    images = np.stack([cv2.imread(str(DATA / r["file"]), cv2.IMREAD_GRAYSCALE) for r in rows])
    landmarks = np.array([r["landmarks68"] for r in rows], np.float32)
    # HELEN-test rows stay held out (source 3); the others act as training photos (source 2).
    source = np.array([3 if r["source"] == "helen_test" else 2 for r in rows], np.uint8)
    names = np.array([f"smoke/{i:03d}_1.jpg" for i in range(len(rows))])
    nose = landmarks[:, 30]
    np.savez_compressed(path, images=images, nose=nose, landmarks68=landmarks, source=source, names=names)
    return path


def test_split_is_identity_disjoint():
    from training.tracking import identity, split_indices

    names = np.array(
        [f"ytf_udacity/training/Person_{k}_{i:02d}.jpg" for k in range(40) for i in range(3)]
        + [f"ytf_udacity/test/Person_{k}_{i:02d}.jpg" for k in range(40) for i in range(2)]
        + ["300w/helen/testset/1_1.jpg", "300w/helen/trainset/2_1.jpg", "300w/helen/trainset/2_2.jpg"]
    )
    source = np.array([0] * 120 + [1] * 80 + [3, 2, 2], np.uint8)
    split = split_indices(names, source)
    groups = {k: {identity(str(names[i]), int(source[i])) for i in v} for k, v in split.items()}
    assert not groups["train"] & groups["test"] and not groups["train"] & groups["val"]
    every = np.concatenate(list(split.values()))
    assert sorted(every.tolist()) == list(range(len(names)))  # every sample in exactly one part
    assert len(split["test"]) and len(split["train"])
    assert int(np.where(names == "300w/helen/testset/1_1.jpg")[0][0]) in split["test"]


def test_augment_flips_points_with_the_image():
    from training.tracking import FLIP_ORDER, KEYPOINTS, SIZE, augment

    rng = np.random.default_rng(0)
    image = np.zeros((1, SIZE, SIZE), np.uint8)
    points = np.zeros((1, len(KEYPOINTS), 2), np.float32)
    for k in range(len(KEYPOINTS)):
        x, y = 20 + 5 * k, 30 + 3 * k
        image[0, y, x] = 255
        points[0, k] = (x, y)
    assert sorted(FLIP_ORDER) == list(range(len(KEYPOINTS)))
    for _ in range(10):
        out, pts = augment(image, points, rng)
        assert out.shape == (1, SIZE, SIZE, 1) and pts.shape == points.shape
        assert np.isfinite(pts).all()
        # The nose point still falls on the image (the warp moves image and points together).
        assert -10 < pts[0, 0, 0] < SIZE + 10 and -10 < pts[0, 0, 1] < SIZE + 10


@pytest.mark.tensorflow
def test_training_smoke(tmp_path):
    pytest.importorskip("tensorflow")
    import onnx

    from models.tracking import DEFAULT_CROP, NoseModel
    from training.tracking import main, onnx_metadata, stamp_metadata

    data = fixture_npz(tmp_path / "faces.npz")
    card = tmp_path / "tracking.md"
    main(
        [
            "--data",
            str(data),
            "--epochs",
            "1",
            "--fine-epochs",
            "1",
            "--batch",
            "8",
            "--out-dir",
            str(tmp_path),
            "--card",
            str(card),
        ]
    )
    assert (tmp_path / "tracking.keras").is_file()
    text = card.read_text()
    assert "mean px" in text and "python -m training.tracking" in text
    assert "| 2 |" in text  # one epoch of each stage in the training log
    assert "BlazeFace" in text and "Haar" not in text.split("## Limits")[1]
    model = NoseModel("smoke", tmp_path / "tracking.onnx")
    model.warmup()
    result = model(np.full((96, 96), 100, np.uint8), detect=False)
    assert result["found"] and 0 <= result["x"] <= 1
    # The export is calibrated for the served face detector, so the tracker uses its own crop.
    meta = onnx_metadata(tmp_path / "tracking.onnx")
    assert meta["crop_detector"] == model.detector.name
    assert json.loads(meta["calibration"])["detected_fraction"] > 0.5  # BlazeFace finds the crops
    assert model.crop == {k: float(meta[k]) for k in ("crop_scale", "crop_dx", "crop_dy")}

    # A model calibrated for another detector is recalibrated by --evaluate-only: metadata only.
    path = tmp_path / "tracking.onnx"
    stamp_metadata(
        path, {"crop_detector": "haar_frontalface_default", "crop_scale": 2.017, "calibration": {}}
    )
    graph = onnx.load(str(path)).graph.SerializeToString()
    assert NoseModel("stale", path).crop == DEFAULT_CROP  # another detector's calibration is not used
    main(["--data", str(data), "--out-dir", str(tmp_path), "--card", str(card), "--evaluate-only"])
    assert onnx.load(str(path)).graph.SerializeToString() == graph
    assert onnx_metadata(path)["crop_detector"] == model.detector.name
    assert NoseModel("again", path).crop == model.crop
    assert "| 2 |" in card.read_text()  # the training log is kept
