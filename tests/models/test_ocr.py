"""The OCR model: segmentation of rendered lines, reading of every layout, and the degraded floor."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from models.ocr import DEFAULT_CHARSET, OcrModel, segment
from models.runtime import ModelInputError

ROOT = Path(__file__).parents[2]
DATA = Path(__file__).parents[1] / "data" / "ocr"
EXAMPLE_54 = "(253)3610321456881 1234567890(17)010120(3902)001000 *11*"


def load_labels(folder: Path) -> list[tuple[str, list[str]]]:
    """Read labels.tsv: file, then the expected lines (\\n between lines)."""
    rows = []
    for row in (folder / "labels.tsv").read_text(encoding="utf-8").splitlines():
        if row and not row.startswith("#"):
            name, text = row.split("\t", 1)
            rows.append((name, text.split("\\n")))
    return rows


LINES = load_labels(DATA / "lines")
DEGRADED = load_labels(DATA / "degraded")


def gray(folder: str, name: str) -> np.ndarray:
    """Load a fixture image as 8-bit gray."""
    image = cv2.imread(str(DATA / folder / name), cv2.IMREAD_GRAYSCALE)
    assert image is not None, name
    return image


def layout(text: str) -> str:
    """The shape of a line: every character an x, spaces kept."""
    return "".join(" " if c == " " else "x" for c in text)


@pytest.fixture(scope="module")
def model() -> OcrModel:
    """The committed OCR model."""
    m = OcrModel("ocr", ROOT / "models" / "ocr.onnx")
    m.warmup()
    return m


# ---------------------------------------------------------------------------- segmentation


@pytest.mark.parametrize("name, lines", LINES, ids=[n for n, _ in LINES])
def test_segmentation_finds_every_glyph_and_space(name, lines):
    seg = segment(gray("lines", name))
    assert len(seg.lines) == len(lines)
    for glyphs, text in zip(seg.lines, lines, strict=True):
        rebuilt = "".join(" " * g.spaces_before + "x" for g in glyphs)
        assert rebuilt == layout(text)


def test_53_and_54_glyph_layouts():
    assert [len(line) for line in segment(gray("lines", "payment_54.png")).lines] == [54]
    assert [len(line) for line in segment(gray("lines", "payment_53.png")).lines] == [53]


def test_deskew_and_polarity_are_detected():
    rotated = segment(gray("lines", "payment_rotated.png"))
    # The fixture was printed 4 degrees counter-clockwise; straightening turns it back.
    assert rotated.angle == pytest.approx(-4.0, abs=0.5)
    dark = segment(gray("lines", "payment_dark.png"))
    assert dark.inverted is True
    assert segment(gray("lines", "payment_54.png")).inverted is False


def test_boxes_are_in_image_pixels_left_to_right():
    image = gray("lines", "payment_600dpi_band.png")
    seg = segment(image)
    boxes = [seg.box(g) for g in seg.lines[0]]
    xs = [b[0] for b in boxes]
    assert xs == sorted(xs)
    for x, y, w, h in boxes:
        assert x >= 0 and x + w <= image.shape[1] and y >= 0 and y + h <= image.shape[0]
        # Each box holds ink (dark pixels), so it is where the glyph is, after scaling back.
        assert image[y : y + h, x : x + w].min() < 128


def test_glyph_images_are_the_classifier_input():
    seg = segment(gray("lines", "payment_54.png"))
    x = seg.tensor()
    assert x.shape == (54, 32, 32, 1) and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 1.0


# ---------------------------------------------------------------------------- reading


@pytest.mark.parametrize("name, lines", LINES, ids=[n for n, _ in LINES])
def test_reads_every_layout_exactly(model, name, lines):
    result = model(gray("lines", name))
    assert [line["text"] for line in result["lines"]] == lines
    assert result["text"] == "\n".join(lines)


def test_result_shape_and_confidence(model):
    result = model(gray("lines", "payment_54.png"))
    assert result["text"] == EXAMPLE_54
    assert result["digits"] == "2533610321456881123456789017010120390200100011"
    chars = result["characters"]
    assert len(chars) == 54
    assert result["confidence"] == min(c["confidence"] for c in chars)
    assert result["confidence"] > 0.5
    assert {"char", "confidence", "box"} == set(chars[0])
    assert result["fields"]["253"]["check_digit"]["valid"] is True
    assert result["fields"]["3902"]["amount"] == "10.00"
    assert result["fields"]["control_key"]["value"] == "11"


def test_bad_check_digit_is_read_as_printed(model):
    result = model(gray("lines", "payment_bad_check.png"))
    assert result["fields"]["253"]["check_digit"]["valid"] is False
    assert result["fields"]["valid"] is False


def test_probabilities_format(model):
    result = model(gray("lines", "payment_53.png"), format="probabilities")
    probs = np.array(result["probabilities"])
    assert probs.shape == (len(result["digits"]), 10) == (45, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    assert "".join(str(i) for i in probs.argmax(axis=1)) == result["digits"]


def test_colour_input_reads_like_gray(model):
    image = gray("lines", "payment_54.png")
    bgr = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    assert model(bgr)["text"] == model(image)["text"]


def test_degraded_accuracy_floor(model):
    """Degraded renders (OCR-B and unseen fonts, 150-240 dpi, rotation, noise, JPEG...)."""
    exact = chars = errors = 0
    for name, lines in DEGRADED:
        read = model(gray("degraded", name))["text"]
        exact += read == lines[0]
        chars += len(lines[0])
        errors += sum(a != b for a, b in zip(read, lines[0], strict=False)) + abs(len(read) - len(lines[0]))
    assert exact / len(DEGRADED) >= 0.75
    assert 1 - errors / chars >= 0.95


# ---------------------------------------------------------------------------- edge cases


def test_blank_image_reads_nothing(model):
    result = model(np.full((60, 400), 255, np.uint8))
    assert result["text"] == "" and result["lines"] == [] and result["characters"] == []
    assert result["confidence"] == 0.0
    assert result["fields"] == {}


def test_noise_does_not_crash(model):
    noise = np.random.default_rng(0).integers(0, 256, (120, 300), dtype=np.uint8)
    result = model(noise)
    assert isinstance(result["text"], str)


def test_tiny_image_is_an_input_error(model):
    with pytest.raises(ModelInputError) as err:
        model(np.zeros((5, 40), np.uint8))
    assert err.value.code == "image_too_small"
    assert err.value.status == 422


def test_charset_comes_with_the_model(model):
    assert model.charset == DEFAULT_CHARSET
    assert (ROOT / "models" / "ocr_charset.txt").read_text().strip() == model.charset
    assert model.describe()["charset"] == model.charset


def test_serving_does_not_import_tensorflow():
    code = "import sys, models.ocr, models.gs1; sys.exit('tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=False).returncode == 0
