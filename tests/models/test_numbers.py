"""The digit model: MNIST-style preprocessing of drawings, postprocessing, and the committed model."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from models.numbers import BOX, CENTER, SIZE, NumbersModel, to_mnist
from models.runtime import ModelInputError

ROOT = Path(__file__).parents[2]
DATA = Path(__file__).parents[1] / "data" / "numbers"


def decode(url: str) -> np.ndarray:
    """Decode a fixture data URL to gray on white, as the image input does."""
    png = base64.b64decode(url.split(",", 1)[1])
    pixels = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels.ndim == 3:  # black ink on transparent: composite on white
        return 255 - pixels[:, :, 3]
    return pixels


@pytest.fixture(scope="module")
def canvases() -> list[tuple[np.ndarray, int]]:
    """The committed canvas-like MNIST test digits, as gray drawings with labels."""
    rows = json.loads((DATA / "canvas_digits.json").read_text())
    return [(decode(row["image"]), row["label"]) for row in rows]


@pytest.fixture(scope="module")
def model() -> NumbersModel:
    """The committed digit model."""
    m = NumbersModel("numbers", ROOT / "models" / "numbers.onnx")
    m.warmup()
    return m


def accuracy(model: NumbersModel, drawings: list[tuple[np.ndarray, int]]) -> float:
    """Return the share of drawings the model gets right."""
    return float(np.mean([model(gray)["prediction"] == label for gray, label in drawings]))


def blank(size: int = 280, value: int = 255) -> np.ndarray:
    """Return an empty canvas."""
    return np.full((size, size), value, np.uint8)


def centre_of_mass(digit: np.ndarray) -> tuple[float, float]:
    """Return (x, y) of a digit's centre of mass."""
    total = digit.sum(dtype=np.float64)
    ys, xs = np.indices(digit.shape)
    return float((xs * digit).sum() / total), float((ys * digit).sum() / total)


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Return the correlation of two digits' pixels: 1 for the same shape, whatever the contrast."""
    return float(np.corrcoef(a.ravel().astype(np.float64), b.ravel().astype(np.float64))[0, 1])


def ink_box(digit: np.ndarray) -> tuple[int, int]:
    """Return the (width, height) of the ink's bounding box."""
    _, _, w, h = cv2.boundingRect((digit > 0).astype(np.uint8))
    return w, h


def seven(
    size: int = 280, width: int = 18, origin: tuple[int, int] = (70, 50), scale: float = 1.0
) -> np.ndarray:
    """Draw a seven in black on a white canvas."""
    canvas = blank(size)
    ox, oy = origin
    pts = np.array([[0, 0], [140, 0], [60, 180]], np.float64) * scale + (ox, oy)
    cv2.polylines(canvas, [pts.astype(np.int32)], False, 0, max(1, width), cv2.LINE_AA)
    return canvas


# ---------------------------------------------------------------- preprocessing


def test_output_is_mnist_shaped_white_on_black():
    ring = np.full((280, 280), 255, np.uint8)
    cv2.circle(ring, (140, 140), 90, 0, 18, cv2.LINE_AA)
    digit = to_mnist(ring)
    assert digit.shape == (SIZE, SIZE) and digit.dtype == np.uint8
    # MNIST: white ink (max 255) on a black field; a round digit leaves a 4 px black border.
    assert digit.max() == 255
    assert digit[:4].max() == digit[-4:].max() == digit[:, :4].max() == digit[:, -4:].max() == 0
    assert ink_box(digit) in ((20, 20), (21, 21), (22, 22))


def test_dark_background_is_not_inverted_light_is():
    black_on_white = seven()
    white_on_black = 255 - black_on_white
    assert np.array_equal(to_mnist(black_on_white), to_mnist(white_on_black))


def test_gray_background_and_ink():
    # A photo-like gray page with dark-gray pencil: the contrast still makes the digit.
    canvas = (seven().astype(np.int32) * 120 // 255 + 110).astype(np.uint8)
    reference = to_mnist(seven())
    digit = to_mnist(canvas)
    assert similarity(digit, reference) > 0.97


def test_box_is_20_pixels_keeping_aspect_ratio():
    digit = to_mnist(seven())
    w, h = ink_box(digit)
    assert max(w, h) in (BOX, BOX + 1, BOX + 2)  # stroke fixes may add a pixel each side
    # The seven is 140 wide for 180 tall: the aspect ratio is kept, not stretched to a square.
    assert 0.6 < w / h < 0.95


@pytest.mark.parametrize("origin", [(8, 8), (150, 120), (10, 150)])
def test_off_centre_and_small_digits_are_centred_by_mass(origin):
    small = seven(size=400, width=9, origin=origin, scale=0.5)
    digit = to_mnist(small)
    cx, cy = centre_of_mass(digit)
    assert abs(cx - CENTER) <= 0.75 and abs(cy - CENTER) <= 0.75
    assert max(ink_box(digit)) >= BOX
    assert similarity(digit, to_mnist(seven(width=18))) > 0.8


@pytest.mark.parametrize(
    "canvas",
    [blank(), blank(value=0), blank(value=128), blank(50), np.full((3, 500), 255, np.uint8)],
    ids=["white", "black", "gray", "small", "thin-strip"],
)
def test_empty_canvas_is_nothing_drawn(canvas):
    with pytest.raises(ModelInputError) as info:
        to_mnist(canvas)
    assert info.value.code == "nothing_drawn"
    assert info.value.status == 422
    assert info.value.message == "Nothing drawn: the canvas is empty."


def test_faint_noise_is_nothing_drawn():
    rng = np.random.default_rng(0)
    canvas = (255 - rng.integers(0, 30, (280, 280))).astype(np.uint8)  # paper grain, no ink
    with pytest.raises(ModelInputError, match="Nothing drawn"):
        to_mnist(canvas)


def test_tiny_canvas_is_nothing_drawn():
    with pytest.raises(ModelInputError, match="Nothing drawn"):
        to_mnist(np.zeros((2, 2), np.uint8))


def test_colour_input_is_rejected():
    with pytest.raises(ModelInputError) as info:
        to_mnist(np.zeros((28, 28, 3), np.uint8))
    assert info.value.code == "bad_image"


def test_transparent_png_matches_white_background():
    from models.image import InputImage

    ink = 255 - seven()
    rgba = np.zeros((280, 280, 4), np.uint8)
    rgba[..., 3] = ink  # black ink, alpha = coverage: what a cleared browser canvas exports
    ok, png = cv2.imencode(".png", rgba)
    assert ok
    pixels = cv2.imdecode(png, cv2.IMREAD_UNCHANGED)
    gray = InputImage(pixels=pixels, format="PNG", source="test").gray()
    assert np.array_equal(to_mnist(gray), to_mnist(seven()))


@pytest.mark.parametrize("width", [1, 2, 4, 40, 70])
def test_thin_and_thick_strokes_come_out_mnist_like(width):
    digit = to_mnist(seven(width=width))
    # MNIST strokes are 2-3 px wide: measure the ink area against the 18 px stroke's.
    reference = np.count_nonzero(to_mnist(seven(width=18)) > 80)
    area = np.count_nonzero(digit > 80)
    assert 0.5 * reference < area < 2.0 * reference


def test_stray_speck_is_ignored():
    canvas = seven(origin=(60, 60), scale=0.8)
    cv2.circle(canvas, (270, 270), 4, 0, -1)  # a tap in the corner
    assert similarity(to_mnist(canvas), to_mnist(seven(origin=(60, 60), scale=0.8))) > 0.99


def test_filled_blob_and_noise_never_crash():
    # Pathological drawings: a filled square (stroke width "infinite"), salt-and-pepper noise,
    # one-pixel lines. Each gives a digit or nothing_drawn, fast, never another error.
    rng = np.random.default_rng(0)
    blob = blank()
    blob[40:240, 40:240] = 0
    drawings = [blob, np.full((1, 500), 0, np.uint8), np.full((500, 3), 0, np.uint8)]
    drawings += [(rng.random((200, 150)) > p).astype(np.uint8) * 255 for p in (0.02, 0.5, 0.98)]
    drawings += [rng.integers(0, 256, (90, 300), dtype=np.uint8) for _ in range(5)]
    for drawing in drawings:
        try:
            digit = to_mnist(drawing)
        except ModelInputError as exc:
            assert exc.code == "nothing_drawn"
        else:
            assert digit.shape == (SIZE, SIZE)


def test_large_canvas_matches_small_one():
    canvas = seven()
    large = cv2.resize(canvas, (1000, 1000), interpolation=cv2.INTER_LINEAR)
    assert similarity(to_mnist(large), to_mnist(canvas)) > 0.95


def test_mnist_digit_comes_back_nearly_unchanged():
    # A digit that is already MNIST-shaped is what preprocessing makes: a second pass keeps it.
    rows = json.loads((DATA / "canvas_digits.json").read_text())
    for row in rows[::20]:
        digit = to_mnist(decode(row["image"]))
        assert similarity(to_mnist(digit), digit) > 0.95


# ---------------------------------------------------------------- the model


def test_preprocess_gives_the_model_input(model):
    x, context = model.preprocess(seven())
    assert context is None
    assert x.shape == (1, SIZE, SIZE, 1) and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() == 1.0


def test_postprocess_top_and_rounding(model):
    y = np.array([[0.01, 0.7532, 0.2, 0.0368, 0, 0, 0, 0, 0, 0]], np.float32)
    assert model.postprocess(y, None) == {"prediction": 1, "certainty": 75.32}
    result = model.postprocess(y, None, top=3)
    assert [row["digit"] for row in result["top"]] == [1, 2, 3]
    assert [row["certainty"] for row in result["top"]] == [75.32, 20.0, 3.68]


def test_probabilities_sum_to_one(model):
    probs = model.predict(model.preprocess(seven())[0])
    assert probs.shape == (1, 10)
    assert abs(float(probs.sum()) - 1) < 1e-5


def test_seven_is_a_seven(model):
    result = model(seven(), top=3)
    assert result["prediction"] == 7
    assert result["top"][0] == {"digit": 7, "certainty": result["certainty"]}


def test_accuracy_on_canvas_digits(model, canvases):
    assert accuracy(model, canvases) >= 0.98


def test_accuracy_with_a_thin_pen(model, canvases):
    # A fine pen: the strokes thinned to a few pixels on the 280-400 px canvas.
    thin = [(cv2.dilate(gray, np.ones((5, 5), np.uint8)), label) for gray, label in canvases[::2]]
    assert accuracy(model, thin) >= 0.95


def test_accuracy_with_a_thick_pen(model, canvases):
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (13, 13))
    thick = [(cv2.erode(gray, kernel), label) for gray, label in canvases[::2]]
    assert accuracy(model, thick) >= 0.95


def test_accuracy_on_large_canvases(model, canvases):
    large = [(cv2.resize(gray, (1000, 1000)), label) for gray, label in canvases[::4]]
    assert accuracy(model, large) >= 0.98


def test_accuracy_small_off_centre(model, canvases):
    rng = np.random.default_rng(3)
    drawings = []
    for gray, label in canvases[::2]:
        canvas = blank(500)
        small = cv2.resize(gray, (120, 120), interpolation=cv2.INTER_AREA)
        x, y = rng.integers(0, 380, 2)
        canvas[y : y + 120, x : x + 120] = small
        drawings.append((canvas, label))
    assert accuracy(model, drawings) >= 0.95


# ---------------------------------------------------------------- ONNX and Keras


@pytest.mark.tensorflow
def test_onnx_matches_keras(canvases):
    pytest.importorskip("tensorflow")
    import keras

    keras_model = keras.models.load_model(ROOT / "models" / "numbers.keras", compile=False)
    served = NumbersModel("numbers", ROOT / "models" / "numbers.onnx")
    x = np.concatenate([served.preprocess(gray)[0] for gray, _ in canvases[:100]])
    expected = keras_model(x, training=False).numpy()
    got = np.concatenate([served.predict(x[i : i + 1]) for i in range(len(x))])
    assert np.abs(got - expected).max() < 1e-4


def test_preprocessing_is_the_same_with_and_without_opencv_ipp(canvases):
    # The app turns IPP off (OPENCV_IPP, models.runtime.set_opencv_ipp); OpenCV's own code must
    # then make the very same 28x28 digits, at every canvas size and stroke width.
    from models.runtime import set_opencv_ipp

    drawings = []
    for gray, _ in canvases[:60]:
        for size in (90, 280, 1000):
            scaled = cv2.resize(gray, (size, size), interpolation=cv2.INTER_LINEAR)
            drawings += [scaled, cv2.erode(scaled, np.ones((7, 7), np.uint8)), 255 - scaled]
    outputs, before = {}, cv2.ipp.useIPP()
    try:
        for ipp in (True, False):
            set_opencv_ipp(ipp)
            if cv2.ipp.useIPP() is not ipp:
                pytest.skip("this OpenCV build has no IPP")
            outputs[ipp] = [to_mnist(d) for d in drawings]
    finally:
        set_opencv_ipp(before)
    assert all(np.array_equal(a, b) for a, b in zip(outputs[True], outputs[False], strict=True))
