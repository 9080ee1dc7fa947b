"""The BlazeFace detector: anchors, decoding, NMS, letterboxing and faces in committed images."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

from models.face_detector import FaceDetector, Letterbox, drop_parts, ssd_anchors, weighted_nms
from models.runtime import ModelFileError
from training.face_detector import background

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "tracking"
LABELS = json.loads((DATA / "labels.json").read_text())
CROPS = LABELS["crops"]
MODEL = ROOT / "models" / "face_detector.onnx"


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(MODEL)


def load(row: dict) -> np.ndarray:
    return cv2.imread(str(DATA / row["file"]), cv2.IMREAD_GRAYSCALE)


def paste(frame: np.ndarray, crop: np.ndarray, x0: int, y0: int, side: int) -> None:
    frame[y0 : y0 + side, x0 : x0 + side] = cv2.resize(crop, (side, side), interpolation=cv2.INTER_CUBIC)


def centre_inside(face, x0: float, y0: float, side: float) -> bool:
    cx, cy = face.x + face.w / 2, face.y + face.h / 2
    return x0 <= cx <= x0 + side and y0 <= cy <= y0 + side


# --- anchors, decoding, NMS (no model needed) ----------------------------------------------------


def test_anchors_match_mediapipe_counts_and_order():
    full = ssd_anchors(192, 192, (4,), (1,), 0.5)
    assert full.shape == (2304, 2)
    # Row-major cells of 4 px, centres at half a cell.
    assert full[:3].tolist() == [[2, 2], [6, 2], [10, 2]]
    assert full[48].tolist() == [2, 6] and full[-1].tolist() == [190, 190]
    short = ssd_anchors(128, 128, (8, 16), (2, 6), 0.5)
    assert short.shape == (896, 2)
    assert short[0].tolist() == short[1].tolist() == [4, 4]
    assert short[512:518].tolist() == [[8, 8]] * 6
    # A non-square input: one anchor per 4x4 cell, rows of width / 4.
    wide = ssd_anchors(64, 128, (4,), (1,), 0.5)
    assert wide.shape == (16 * 32, 2) and wide[32].tolist() == [2, 6]


def test_decode_puts_the_box_and_keypoints_around_their_anchor(detector):
    anchors = detector.anchors(detector.size, detector.size)
    regressors = np.zeros((1, len(anchors), 16), np.float32)
    logits = np.full((1, len(anchors), 1), -20, np.float32)
    i = 1000
    regressors[0, i, :4] = [3.0, -2.0, 40.0, 30.0]
    regressors[0, i, 4:6] = [-10.0, -8.0]  # first keypoint
    logits[0, i, 0] = 2.0
    corners, keypoints, scores = detector.decode(regressors, logits, (detector.size, detector.size))
    ax, ay = anchors[i] * detector.unit
    cx, cy = (ax + 3.0) * 1, ay - 2.0
    assert corners.shape == (1, 4)
    np.testing.assert_allclose(corners[0], [cx - 20, cy - 15, cx + 20, cy + 15], atol=1e-4)
    np.testing.assert_allclose(keypoints[0, 0], [ax - 10, ay - 8], atol=1e-4)
    assert scores[0] == pytest.approx(1 / (1 + np.exp(-2.0)))


def test_decode_drops_scores_under_the_threshold(detector):
    n = len(detector.anchors(detector.size, detector.size))
    regressors = np.ones((1, n, 16), np.float32) * 10
    logits = np.full((1, n, 1), np.log(detector.min_score / (1 - detector.min_score)) - 0.01, np.float32)
    assert len(detector.decode(regressors, logits, (detector.size, detector.size))[2]) == 0


def test_weighted_nms_blends_a_cluster_and_keeps_a_separate_box():
    corners = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], float)
    keypoints = np.zeros((3, 6, 2))
    keypoints[1] += 3
    scores = np.array([0.9, 0.6, 0.7])
    kept = weighted_nms(corners, keypoints, scores, 0.3)
    assert [k[2] for k in kept] == [0.9, 0.7]  # best first, each cluster keeps its best score
    np.testing.assert_allclose(kept[0][0], [0.4, 0.4, 10.4, 10.4])  # (0.9 * 0 + 0.6 * 1) / 1.5
    np.testing.assert_allclose(kept[0][1], np.full((6, 2), 1.2))
    np.testing.assert_allclose(kept[1][0], [50, 50, 60, 60])


def test_a_box_inside_a_larger_face_is_dropped():
    from models.face_detector import Face

    big = Face(0, 0, 100, 100, 0.7, np.zeros((6, 2)))
    part = Face(10, 10, 30, 30, 0.9, np.zeros((6, 2)))
    other = Face(90, 0, 40, 40, 0.8, np.zeros((6, 2)))  # a quarter of it overlaps: another face
    assert drop_parts([part, other, big]) == [big, other]


def test_letterbox_maps_points_back_on_a_non_square_image(detector):
    image = np.zeros((100, 300), np.uint8)  # wide: fitted to the width, padded above and below
    tensor, box = detector.letterbox(image)
    s = detector.size
    assert tensor.shape == (1, s, s, 3)
    assert (
        box.scale_x == pytest.approx(s / 300)
        and box.pad_x == 0
        and box.pad_y == (s - round(100 * s / 300)) // 2
    )
    centre = box.to_image(np.array([s / 2, s / 2]))
    assert centre == pytest.approx([150, 50], abs=1.0)
    # The border is mid-grey (0 in -1..1), the image black (-1).
    assert tensor[0, 0, 0, 0] == 0 and tensor[0, s // 2, s // 2, 0] == -1
    corners = Letterbox(0.5, 0.5, 10, 20).to_image(np.array([[10, 20], [60, 70]]))
    assert corners.tolist() == [[0, 0], [100, 100]]


def test_zoomed_input_sides_are_multiples_of_the_grid(detector):
    tensor, box = detector.zoomed(np.zeros((480, 640), np.uint8), 0.75)
    assert tensor.shape[1] % detector.multiple == 0 and tensor.shape[2] % detector.multiple == 0
    assert tensor.shape[1:3] == (384, 480) and box.pad_x == box.pad_y == 0


def test_missing_decoder_metadata_is_a_model_file_error(tmp_path):
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(MODEL))
    del model.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(model, str(bare))
    with pytest.raises(ModelFileError, match="decoder settings"):
        FaceDetector(bare)
    shutil.copy(MODEL, tmp_path / "ok.onnx")
    assert FaceDetector(tmp_path / "ok.onnx").size == 192


# --- faces in committed images ---------------------------------------------------------------------


@pytest.mark.parametrize("frame", [row["file"] for row in LABELS["frames"]])
def test_a_face_image_gives_one_box_around_the_face(detector, frame):
    row = next(r for r in LABELS["frames"] if r["file"] == frame)
    image = cv2.imread(str(DATA / frame))[:, :, ::-1].copy()
    faces = detector.detect(image, min_face=40)
    assert len(faces) == 1
    face = faces[0]
    x, y, side = row["face_box"][0], row["face_box"][1], row["face_box"][2]
    assert x <= face.x and face.x + face.w <= x + side and y <= face.y and face.y + face.h <= y + side
    # The box is a face's (a third to two thirds of the crop), and its nose keypoint is on the nose.
    assert 0.3 * side <= face.w <= 0.7 * side
    iod = float(np.hypot(*np.subtract(row["eye_left_outer"], row["eye_right_outer"])))
    assert np.hypot(*(face.keypoints[2] - row["nose"])) <= 0.5 * iod


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_face_free_texture_gives_no_box(detector, seed):
    assert detector.detect(background(640, 480, seed=seed), min_face=40) == []


def test_boxes_map_back_through_the_letterbox_on_non_square_frames(detector):
    crop = load(CROPS[0])
    for width, height, x0, y0 in ((700, 260, 420, 20), (260, 700, 30, 420)):
        frame = background(width, height, seed=4)
        paste(frame, crop, x0, y0, 220)
        faces = detector.detect(frame, min_face=40)
        assert len(faces) == 1, (width, height)
        assert centre_inside(faces[0], x0, y0, 220)
        # Against the face found in the crop alone, shifted and scaled to where it was pasted.
        alone = detector.detect(cv2.resize(crop, (220, 220), interpolation=cv2.INTER_CUBIC))[0]
        assert abs(faces[0].x - (alone.x + x0)) <= 0.08 * 220 and abs(faces[0].w - alone.w) <= 0.1 * 220


def test_several_faces_come_largest_first(detector):
    frame = background(800, 500, seed=3)
    placements = [(40, 150, 125, CROPS[1]), (380, 80, 288, CROPS[25]), (600, 330, 160, CROPS[7])]
    for x0, y0, side, row in placements:
        paste(frame, load(row), x0, y0, side)
    faces = detector.detect(frame, min_face=40)
    areas = [f.w * f.h for f in faces]
    assert areas == sorted(areas, reverse=True)
    assert len(faces) == 3
    order = [
        next(i for i, (x0, y0, side, _) in enumerate(placements) if centre_inside(f, x0, y0, side))
        for f in faces
    ]
    assert order == [1, 2, 0]


def test_the_zoomed_look_finds_small_faces(detector):
    frame = background(640, 480, seed=0)
    paste(frame, load(CROPS[0]), 300, 120, 96)  # a face about 40 px wide
    assert detector.detect(frame) == []  # one look at 192 px: under 15 px, too small
    faces = detector.detect(frame, min_face=40)
    assert len(faces) == 1 and centre_inside(faces[0], 300, 120, 96)


def test_detect_is_thread_safe(detector):
    frames = []
    for k in range(6):
        frame = background(480, 360, seed=k)
        paste(frame, load(CROPS[k]), 30 + 40 * k, 40, 192)
        frames.append(frame)

    def boxes(frame):
        return [f.box for f in detector.detect(frame, min_face=40)]

    expected = [boxes(f) for f in frames]
    with ThreadPoolExecutor(max_workers=6) as pool:
        assert list(pool.map(boxes, frames * 4)) == expected * 4


def test_a_fallback_score_admits_a_face_under_the_threshold_only_when_none_reaches_it(detector):
    frame = background(640, 480, seed=22)
    paste(frame, load(CROPS[22]), 240, 162, 144)  # a blurred face: it scores 0.5-0.6
    assert detector.detect(frame, min_face=40) == []
    faces = detector.detect(frame, min_face=40, fallback_score=0.5)
    assert len(faces) == 1 and centre_inside(faces[0], 240, 162, 144)
    assert 0.5 <= faces[0].score < detector.min_score
    # A face over the threshold is answered alone: the fallback does not add weaker ones.
    sure = background(640, 480, seed=0)
    paste(sure, load(CROPS[0]), 300, 120, 240)
    assert [f.box for f in detector.detect(sure, min_face=40, fallback_score=0.5)] == [
        f.box for f in detector.detect(sure, min_face=40)
    ]
