"""The doodle model: labels, canvas preprocessing, and accuracy on committed held-out doodles."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from models.classifier import read_labels
from models.doodles import (
    CENTRE_SPAN,
    LONG_SIDE,
    STROKE_WIDTH,
    DoodleModel,
    _thinning_tables,
    restroke,
    stroke_width,
    thin,
    to_bitmap,
)
from models.runtime import LabelMismatchError, ModelFileError, ModelInputError

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "doodles.onnx"
LABELS = ROOT / "models" / "doodles_labels.txt"
FIXTURES = ROOT / "tests" / "data" / "doodles"


@pytest.fixture(scope="module")
def model() -> DoodleModel:
    return DoodleModel("doodles", MODEL, labels=LABELS)


@pytest.fixture(scope="module")
def held_out() -> dict[str, np.ndarray]:
    with np.load(FIXTURES / "doodles_28.npz") as d:
        return {k: d[k] for k in d.files}


def canvas_gray(path: Path) -> np.ndarray:
    """Load a canvas PNG as the image module's gray() does: transparency composited on white."""
    image = Image.open(path).convert("RGBA")
    white = Image.new("RGBA", image.size, (255, 255, 255, 255))
    white.alpha_composite(image)
    return np.asarray(white.convert("L"))


def drawn_circle(size: int, radius: int, pen: int, centre: tuple[int, int] | None = None) -> np.ndarray:
    """Return a black circle outline drawn with a pen of `pen` px on a white canvas."""
    canvas = np.full((size, size), 255, np.uint8)
    cv2.circle(canvas, centre or (size // 2, size // 2), radius, 0, pen, lineType=cv2.LINE_AA)
    return canvas


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Return the Pearson correlation of two images' pixels."""
    return float(np.corrcoef(a.ravel().astype(float), b.ravel().astype(float))[0, 1])


def ink_box(bitmap: np.ndarray) -> tuple[int, int, int, int]:
    """Return (top, bottom, left, right) margins of the ink in a 28x28 bitmap."""
    ys, xs = np.nonzero(bitmap)
    return int(ys.min()), int(27 - ys.max()), int(xs.min()), int(27 - xs.max())


# --- labels -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cat\ndog\n", ["cat", "dog"]),
        ("cat\ndog", ["cat", "dog"]),
        ("house plant\r\nhot dog\r\n\r\n", ["house plant", "hot dog"]),
        ("0 house plant\n1 Flower pot\n", ["house plant", "Flower pot"]),
        ("0 Käse\n1 猫\n", ["Käse", "猫"]),
        ("\ufeffapple\nbanana\n", ["apple", "banana"]),
        ("3 little pigs\n101 dalmatians\n", ["3 little pigs", "101 dalmatians"]),
    ],
)
def test_read_labels(tmp_path: Path, text: str, expected: list[str]) -> None:
    path = tmp_path / "labels.txt"
    path.write_bytes(text.encode("utf-8"))
    assert read_labels(path) == expected


def test_read_labels_missing_or_empty(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="not found"):
        read_labels(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("\n\n", encoding="utf-8")
    with pytest.raises(ModelFileError, match="empty"):
        read_labels(tmp_path / "empty.txt")


def test_committed_labels_match_model(model: DoodleModel, held_out: dict) -> None:
    assert model.labels == [str(n) for n in held_out["class_names"]]
    assert len(model.labels) == 24
    assert model.input_mode == "gray"
    assert model.kind == "doodle"


def test_label_count_mismatch_names_both_files(tmp_path: Path) -> None:
    labels = tmp_path / "three.txt"
    labels.write_text("a\nb\nc\n", encoding="utf-8")
    with pytest.raises(LabelMismatchError) as err:
        DoodleModel("doodles", MODEL, labels=labels)
    assert isinstance(err.value, ModelFileError) and err.value.fatal
    assert str(labels) in str(err.value) and str(MODEL) in str(err.value)
    assert "3 labels" in str(err.value) and "24 outputs" in str(err.value)


# --- preprocessing ----------------------------------------------------------------------------


def test_inversion_either_polarity_gives_the_same_bitmap() -> None:
    dark_on_light = drawn_circle(300, 90, 14)
    light_on_dark = 255 - dark_on_light
    a, b = to_bitmap(dark_on_light), to_bitmap(light_on_dark)
    assert a.dtype == np.uint8 and a.shape == (28, 28)
    np.testing.assert_array_equal(a, b)
    # White strokes on black, like the dataset: the corners are background.
    assert a[0, 0] == 0 and a.max() > 200


def test_crop_scales_long_side_to_26_and_centres() -> None:
    corner = drawn_circle(400, 40, 8, centre=(60, 330))
    centred = drawn_circle(400, 150, 20)
    for canvas in (corner, centred):
        bitmap = to_bitmap(canvas)
        top, bottom, left, right = ink_box(bitmap)
        assert 28 - top - bottom == LONG_SIDE
        assert abs(top - bottom) <= 1 and abs(left - right) <= 1
    # Where and how large it was drawn no longer matters.
    assert correlation(to_bitmap(corner), to_bitmap(centred)) > 0.95


def test_crop_keeps_aspect_ratio() -> None:
    canvas = np.full((300, 500), 255, np.uint8)
    cv2.rectangle(canvas, (50, 120), (450, 200), 0, 10)  # 400 x 80: a 5:1 box
    top, bottom, left, right = ink_box(to_bitmap(canvas))
    width, height = 28 - left - right, 28 - top - bottom
    assert width == LONG_SIDE
    assert 5 <= height <= 8
    assert abs(top - bottom) <= 1


@pytest.mark.parametrize("pen", [3, 10, 20, 40])
def test_stroke_width_is_normalised_to_the_dataset(pen: int) -> None:
    bitmap = to_bitmap(drawn_circle(600, 250, pen))
    reference = to_bitmap(drawn_circle(600, 250, 12))
    # The circle's centre line becomes 23.5 px across: ink mass / circumference is the pen width.
    width = (bitmap / 255.0).sum() / (np.pi * CENTRE_SPAN)
    assert abs(width - STROKE_WIDTH) < 0.15, width
    assert correlation(bitmap, reference) > 0.97


def edge_level(bitmap: np.ndarray) -> float:
    """Return the mean level (0..1) of the outermost ink pixels on a bitmap's long side."""
    rows, cols = bitmap.max(axis=1) / 255.0, bitmap.max(axis=0) / 255.0
    profile = rows if np.ptp(np.flatnonzero(rows)) >= np.ptp(np.flatnonzero(cols)) else cols
    ink = np.flatnonzero(profile > 0)
    return float(profile[ink[0]] + profile[ink[-1]]) / 2


def test_canvas_drawings_are_drawn_as_the_dataset_is(held_out: dict) -> None:
    # Google's rendering (a 1.47-px pen around centre lines 23.5 px long) leaves the outermost
    # pixels of the long side partly inked: 0.38 on average in the dataset. Scaling the inked box
    # to 26 px instead (the previous preprocessing) gave 0.82 and 18% more ink.
    with open(FIXTURES / "labels.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))[::4]
    served = np.stack([to_bitmap(canvas_gray(FIXTURES / r["file"])) for r in rows])
    raw = held_out["x"][[int(r["file"][7:10]) for r in rows]]
    assert abs(np.mean([edge_level(b) for b in served]) - np.mean([edge_level(b) for b in raw])) < 0.1
    assert abs(served.sum() / raw.sum() - 1) < 0.08
    # The ink spans 26 px on the long side (pixels 1-26), as in 99.9% of the dataset's bitmaps.
    spans = [28 - min(top + bottom, left + right) for top, bottom, left, right in map(ink_box, served)]
    assert np.mean(np.asarray(spans) == 26) > 0.95


def test_dataset_bitmaps_keep_their_look(held_out: dict) -> None:
    x = held_out["x"][:60]
    redone = np.stack([to_bitmap(b) for b in x])
    assert np.median([correlation(a, b) for a, b in zip(x, redone, strict=True)]) > 0.9
    widths = [stroke_width(b > 127) for b in redone]
    assert 1.0 < np.median(widths) < 2.5


def test_canvas_drawings_come_out_like_their_dataset_bitmaps(held_out: dict) -> None:
    with open(FIXTURES / "labels.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))[::6]
    scores = [
        correlation(to_bitmap(canvas_gray(FIXTURES / r["file"])), held_out["x"][int(r["file"][7:10])])
        for r in rows
    ]
    # 0.88 with the previous preprocessing (inked box scaled to 26 px, outlines grown to the pen).
    assert np.median(scores) > 0.95


def test_restroke_sets_line_width_and_keeps_fills() -> None:
    canvas = np.zeros((200, 300), np.uint8)
    cv2.line(canvas, (20, 40), (280, 40), 255, 15)
    cv2.line(canvas, (20, 100), (280, 100), 255, 15)
    cv2.circle(canvas, (150, 160), 30, 255, -1)  # a coloured-in disc, 61 px across
    ink = restroke(canvas > 0, 5.0)
    pad = (ink.shape[0] - 200) // 2
    column = ink[:, pad + 60]  # crosses both lines, not the disc
    assert 4.0 < column.sum() / 2 < 6.5  # two lines, each ~5 px wide now
    disc = ink[pad + 160, pad + 100 : pad + 200]
    assert disc.sum() > 40  # still filled (about 61 - 15 + 5 px across), not a 5-px ring


_TABLES = _thinning_tables()


def numpy_thin(mask: np.ndarray) -> np.ndarray:
    """The reference: Zhang-Suen with eight shifted NumPy copies per sub-step (the earlier thin())."""
    tables = _TABLES
    img = np.pad(mask.astype(np.uint8), 1)
    centre = img[1:-1, 1:-1]
    changed = True
    while changed:
        changed = False
        for table in tables:
            code = (
                img[:-2, 1:-1]
                | img[:-2, 2:] << 1
                | img[1:-1, 2:] << 2
                | img[2:, 2:] << 3
                | img[2:, 1:-1] << 4
                | img[2:, :-2] << 5
                | img[1:-1, :-2] << 6
                | img[:-2, :-2] << 7
            )
            remove = table[code] & (centre == 1)
            if remove.any():
                centre[remove] = 0
                changed = True
    return centre.astype(bool)


def test_thin_gives_the_reference_pixels() -> None:
    rng = np.random.default_rng(7)
    for n in range(120):
        mask = np.zeros((int(rng.integers(5, 110)), int(rng.integers(5, 110))), np.uint8)
        for _ in range(int(rng.integers(1, 6))):
            p, q = (tuple(int(v) for v in rng.integers(-5, 110, 2)) for _ in range(2))
            cv2.line(mask, p, q, 1, int(rng.integers(1, 12)))
        if n % 3 == 0:
            cv2.circle(mask, (20, 20), int(rng.integers(2, 20)), 1, -1)
        if n % 4 == 0:  # speckle, and ink touching the edges
            mask |= (rng.random(mask.shape) < 0.15).astype(np.uint8)
        assert np.array_equal(thin(mask.astype(bool)), numpy_thin(mask.astype(bool))), n


def reference_restroke(mask: np.ndarray, diameter: float, width: float, grow: bool) -> np.ndarray:
    """restroke() with the distance out of the drawing always computed (before it was skipped)."""
    skeleton = np.pad(thin(mask), int(np.ceil(diameter)) + 2)
    mask = np.pad(mask, int(np.ceil(diameter)) + 2)
    dist = lambda m: cv2.distanceTransform(m.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)  # noqa: E731
    signed = np.where(mask, dist(mask) - 0.5, 0.5 - dist(~mask))
    change = width - diameter if grow else max(width - diameter, 0.0)
    shape = np.clip(signed - change / 2 + 0.5, 0.0, 1.0)
    lines = np.clip(diameter / 2 + 0.5 - dist(~skeleton), 0.0, 1.0)
    return np.maximum(shape, lines).astype(np.float32)


@pytest.mark.parametrize("grow", [False, True])
def test_restroke_gives_the_reference_ink(grow: bool) -> None:
    rng = np.random.default_rng(11)
    for n in range(40):
        mask = np.zeros((int(rng.integers(20, 100)), int(rng.integers(20, 100))), np.uint8)
        for _ in range(int(rng.integers(1, 5))):
            p, q = (tuple(int(v) for v in rng.integers(0, 100, 2)) for _ in range(2))
            cv2.line(mask, p, q, 1, int(rng.integers(1, 10)))
        if n % 3 == 0:
            cv2.circle(mask, (30, 30), int(rng.integers(3, 15)), 1, -1)
        mask = mask.astype(bool)
        diameter, width = float(rng.uniform(1.0, 9.0)), float(rng.uniform(1.0, 9.0))
        ours = restroke(mask, diameter, width=width, grow=grow)
        assert np.array_equal(ours, reference_restroke(mask, diameter, width, grow)), n


def test_thin_gives_one_pixel_lines() -> None:
    mask = np.zeros((40, 60), bool)
    mask[15:24, 5:55] = True  # a 9-px-thick bar
    skeleton = thin(mask)
    assert skeleton.any()
    assert skeleton.sum(axis=0)[10:50].max() == 1
    assert thin(np.zeros((5, 5), bool)).sum() == 0


@pytest.mark.parametrize(
    "canvas",
    [
        np.full((280, 280), 255, np.uint8),
        np.zeros((280, 280), np.uint8),
        np.full((100, 100), 128, np.uint8),
        (np.random.default_rng(0).integers(240, 256, (280, 280))).astype(np.uint8),
    ],
    ids=["white", "black", "gray", "paper-noise"],
)
def test_empty_canvas_is_nothing_drawn(model: DoodleModel, canvas: np.ndarray) -> None:
    with pytest.raises(ModelInputError) as err:
        model(canvas)
    assert err.value.code == "nothing_drawn"
    assert err.value.status == 422
    assert err.value.message == "Nothing drawn: the canvas is empty."


def test_a_single_dot_is_still_a_drawing(model: DoodleModel) -> None:
    canvas = np.full((280, 280), 255, np.uint8)
    cv2.circle(canvas, (140, 140), 4, 0, -1)
    result = model(canvas)
    assert result["label"] in model.labels


# --- postprocess and the classifier contract ----------------------------------------------------


def test_postprocess_shape(model: DoodleModel) -> None:
    probs = np.full((1, 24), 0.01, np.float32)
    probs[0, 9], probs[0, 12], probs[0, 16] = 0.61234567, 0.2, 0.05
    out = model.postprocess(probs, None, top=3)
    assert out["label"] == "cat" and out["confidence"] == 0.6123
    assert [t["label"] for t in out["top"]] == ["cat", "dog", "horse"]
    assert [t["confidence"] for t in out["top"]] == [0.6123, 0.2, 0.05]
    assert len(model.postprocess(probs, None, top=1)["top"]) == 1
    assert len(model.postprocess(probs, None, top=100)["top"]) == 24
    assert len(model.postprocess(probs, None, top=0)["top"]) == 1


def test_model_call_returns_the_contract(model: DoodleModel) -> None:
    result = model(drawn_circle(280, 100, 12), top=5)
    assert set(result) == {"label", "confidence", "top"}
    assert len(result["top"]) == 5
    confidences = [t["confidence"] for t in result["top"]]
    assert confidences == sorted(confidences, reverse=True)
    assert all(0.0 <= c <= 1.0 for c in confidences)
    assert result["label"] == result["top"][0]["label"]


# --- accuracy on committed held-out doodles -----------------------------------------------------


def test_accuracy_floor_on_held_out_bitmaps(model: DoodleModel, held_out: dict) -> None:
    x = held_out["x"].astype(np.float32)[..., None]
    probs = np.concatenate([model.predict(x[i : i + 1]) for i in range(len(x))])
    top1 = np.mean(probs.argmax(axis=1) == held_out["y"])
    top3 = np.mean(
        [y in row for y, row in zip(held_out["y"], np.argsort(-probs, axis=1)[:, :3], strict=True)]
    )
    # Measured with doodles.onnx of 2026-12-04: top-1 0.903, top-3 0.967.
    assert top1 >= 0.89, f"held-out top-1 {top1:.3f}"
    assert top3 >= 0.955, f"held-out top-3 {top3:.3f}"


def test_accuracy_floor_on_canvas_drawings(model: DoodleModel) -> None:
    with open(FIXTURES / "labels.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 360
    correct = sum(model(canvas_gray(FIXTURES / r["file"]))["label"] == r["label"] for r in rows)
    # Measured with doodles.onnx of 2026-12-04: 0.900 (the previous model and preprocessing: 0.889).
    assert correct / len(rows) >= 0.885, f"canvas top-1 {correct / len(rows):.3f}"


def test_served_graph_averages_a_drawing_and_its_mirror(model: DoodleModel, held_out: dict) -> None:
    x = held_out["x"][:32].astype(np.float32)[..., None]
    np.testing.assert_allclose(model.predict(x), model.predict(x[:, :, ::-1]), atol=1e-6)


@pytest.mark.tensorflow
def test_onnx_matches_keras(held_out: dict) -> None:
    pytest.importorskip("tensorflow")
    import keras
    import onnxruntime as ort

    keras_model = keras.models.load_model(ROOT / "models" / "doodles.keras")
    x = held_out["x"][:64].astype(np.float32)[..., None]
    expected = np.asarray(keras_model(x, training=False))
    session = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    assert got.shape == expected.shape == (64, 24)
    np.testing.assert_allclose(got, expected, atol=1e-4)
