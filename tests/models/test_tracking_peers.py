"""The nose tracker's side-by-side with MediaPipe (bench/tracking_peers.py): scoring, pins, the card's table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench import tracking_peers

ROOT = Path(__file__).resolve().parents[2]


def test_errors_are_normalised_by_the_outer_eye_corners_and_skip_unanswered():
    lm = np.zeros((3, 68, 2), np.float32)
    lm[:, 36], lm[:, 45], lm[:, 30] = (30, 40), (70, 40), (50, 55)
    faces = {"landmarks68": lm}
    points = np.array([[50, 55], [54, 58], [np.nan, np.nan]], float)
    err, ok = tracking_peers.errors_of(points, faces, np.arange(3))
    assert ok.tolist() == [True, True, False]
    assert err[:2] == pytest.approx([0.0, 5 / 40])
    row = tracking_peers.summary(err[ok], 3)
    assert row["answered"] == pytest.approx(2 / 3, abs=1e-4) and row["mean"] == pytest.approx(0.0625)


def test_loco_models_are_named_by_the_collection_they_were_trained_on():
    args = tracking_peers.parse_args(
        ["--data", "x.npz", "--loco", "udacity=a.onnx", "helen=b.onnx", "--out", ""]
    )
    assert args.loco == {"udacity": Path("a.onnx"), "helen": Path("b.onnx")} and not args.out
    with pytest.raises(SystemExit):
        tracking_peers.parse_args(["--data", "x.npz", "--loco", "flickr=a.onnx"])


def test_mediapipe_is_pinned_to_the_last_wheel_with_face_mesh():
    pins = [
        line for line in tracking_peers.PINS.read_text().splitlines() if line and not line.startswith("#")
    ]
    assert "mediapipe==0.10.21" in pins
    assert all("==" in line for line in pins)  # every package pinned (installed with --no-deps)


def test_committed_results_render_in_the_card():
    from training import cards

    results = json.loads(tracking_peers.RESULTS.read_text())
    systems = {r["system"] for r in results["rows"]}
    assert {"mediapipe_96", "mediapipe_192", "served_crop", "served_detect"} <= systems
    for row in results["rows"]:
        assert 0 <= row["answered"] <= 1 and row["n"] > 0
    text = cards.environment().get_template("tracking_peers.md.j2").render(peers=results)
    assert "MediaPipe Face Mesh" in text and results["command"] in text
    assert text.count("\n| ") >= len(results["rows"]) + 1


def test_the_detectors_nose_keypoint_lands_on_the_nose_of_annotated_faces():
    from training.tracking_data import interocular
    from training.tracking_external import load_external

    faces = load_external()
    points, cpu_ms = tracking_peers.detector_points(faces["images"])
    assert points.shape == (len(faces["images"]), 2) and cpu_ms > 0
    lm = faces["landmarks68"]
    err = np.linalg.norm(points - lm[:, 30], axis=1) / interocular(lm)
    # In crop pixels (not the padded canvas): each keypoint within a third of the eyes' distance.
    assert np.isfinite(err).all() and (err < 0.33).all()


def test_card_option_is_off_unless_asked():
    assert not tracking_peers.parse_args(["--data", "x.npz"]).card
    assert tracking_peers.parse_args(["--data", "x.npz", "--card"]).card
