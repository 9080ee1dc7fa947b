"""The line band (models.ocr_line) and the reject class: other print near a line stays out of it."""

from __future__ import annotations

import numpy as np
import pytest

from models.ocr import DEFAULT_CHARSET, OcrModel
from models.ocr_line import Band, Glyph, band_pieces, fit_rows
from models.ocr_segment import Segmentation


def test_fit_rows_finds_the_densest_row_first_and_follows_a_curve():
    cap = 32.0
    xs = np.arange(30) * 24.0
    bend = 0.4 * cap * np.sin(np.pi * xs / xs[-1])  # paper bent by 0.4 cap across the line
    y = (100 + bend).astype(int)
    # A shorter row of other print just above it.
    other_x, other_y = np.arange(8) * 30.0, np.full(8, 60)
    x = np.r_[xs, other_x].astype(int)
    top = np.r_[y, other_y]
    w, h = np.full(x.size, 18), np.full(x.size, int(cap))
    bands = fit_rows(x, top, w, h, cap)
    assert len(bands) == 2
    t, b = bands[0].at(xs + 9)
    np.testing.assert_allclose(t, y, atol=2)
    np.testing.assert_allclose(b, y + cap, atol=2)


def test_band_pieces_cut_touching_print_above_and_drop_print_outside():
    binary = np.zeros((200, 400), np.uint8)
    for k in range(10):  # ten glyph-like bars, cap 32, between rows 80 and 112
        binary[80:112, 20 + 36 * k : 40 + 36 * k] = 1
    binary[60:82, 22:38] = 1  # print from above, touching the first glyph
    binary[40:60, 200:260] = 1  # print above, not touching
    band = Band(np.array([80.0]), np.array([112.0]), 30.0, 354.0)
    identity = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    pieces, labels, (ox, oy), cut = band_pieces(binary, band, 32.0, identity, (400, 200))
    assert len(pieces) == 10 and cut == 0.0
    tops = [p.y0 + oy for p in pieces]
    # The touching print is cut at the band's allowance (RISE = 0.15 cap), the rest is gone.
    assert min(tops) >= 80 - 0.15 * 32 - 1 and max(tops) == 80
    # The same band in a crop whose top edge runs through the print above: no glyph touches it.
    shifted = np.array([[1.0, 0, 0], [0, 1.0, -70]])
    assert band_pieces(binary, band, 32.0, shifted, (400, 130))[3] == 0.0
    # A crop whose top edge is the glyphs' own top row: every piece is cut by it.
    assert band_pieces(binary, band, 32.0, np.array([[1.0, 0, 0], [0, 1.0, -80]]), (400, 120))[3] == 1.0


def test_rejected_glyphs_and_lines_are_left_out():
    """A line the classifier calls other print is dropped; a rejected glyph inside a line too."""
    model = OcrModel.__new__(OcrModel)
    model.charset, model.reject = DEFAULT_CHARSET, True
    model.digit_index = np.arange(10)
    image = np.zeros((32, 32), np.float32)
    seg = Segmentation(size=(400, 100))
    seg.lines = [
        [Glyph(10 * i, 0, 10 * i + 8, 10, image) for i in range(4)],  # other print
        [Glyph(10 * i, 40, 10 * i + 8, 50, image) for i in range(3)],
    ]
    seg.lines[1][1].spaces_before = 1
    reject = len(DEFAULT_CHARSET)
    picks = [reject, reject, reject, 1, 1, reject, 2]
    probs = np.eye(len(DEFAULT_CHARSET) + 1, dtype=np.float32)[picks]
    result = model.postprocess(probs, seg)
    assert [line["text"] for line in result["lines"]] == ["1 2"]
    assert len(result["characters"]) == 2


@pytest.mark.parametrize("reject", [False, True])
def test_class_count_must_match_the_charset(tmp_path, reject):
    """The committed model's classes: the charset, plus one when its metadata says reject=1."""
    from pathlib import Path

    model = OcrModel("ocr", Path(__file__).parents[2] / "models" / "ocr.onnx")
    classes = model.onnx.session.get_outputs()[0].shape[-1]
    assert classes == len(model.charset) + model.reject
