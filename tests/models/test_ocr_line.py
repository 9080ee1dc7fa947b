"""The line band (models.ocr_line) and the reject class: other print near a line stays out of it."""

from __future__ import annotations

import numpy as np
import pytest

from models.ocr import DEFAULT_CHARSET, OcrModel
from models.ocr_line import Band, Glyph, band_pieces, count_spaces, fit_rows, line_glyphs
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


def rejecting_model() -> OcrModel:
    """An OcrModel with the default charset and a reject class, without an ONNX file (postprocess only)."""
    model = OcrModel.__new__(OcrModel)
    model.charset, model.reject = DEFAULT_CHARSET, True
    model.digit_index = np.arange(10)
    return model


def test_rejected_glyphs_and_lines_are_left_out():
    """A line the classifier calls other print is dropped; a rejected glyph inside a line too."""
    model = rejecting_model()
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


def test_a_row_broken_by_glyphs_that_print_touches_is_one_band():
    """Glyphs merged with print above are not cap-high: the cap-high ones on either side are one row."""
    cap = 32.0
    xs = np.arange(30) * 24.0
    h = np.full(30, int(cap))
    h[8:13] = int(2 * cap)  # five glyphs merged with the print above: 3 caps without a cap-high one
    y = np.where(h > cap, 100 - int(cap), 100)
    bands = fit_rows(xs.astype(int), y, np.full(30, 18), h, cap)
    assert len(bands) == 1
    assert bands[0].x0 < 24 and bands[0].x1 > 24 * 28
    # Two rows side by side at different heights stay two.
    y2 = np.where(np.arange(30) < 10, 100, 160)
    assert len(fit_rows(xs.astype(int), y2, np.full(30, 18), np.full(30, int(cap)), cap)) == 2


def test_band_pieces_follow_glyphs_past_the_band_end_but_not_far_print():
    binary = np.zeros((200, 900), np.uint8)
    for k in range(10):
        binary[80:112, 20 + 36 * k : 40 + 36 * k] = 1
    # Past the band's end: a key two pitches on (kept), and print 4 caps past that (dropped).
    for x in (20 + 36 * 11, 20 + 36 * 12, 20 + 36 * 12 + 30 + 4 * 32):
        binary[80:112, x : x + 20] = 1
    band = Band(np.array([80.0]), np.array([112.0]), 30.0, 30.0 + 36 * 9)
    identity = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    pieces, *_ = band_pieces(binary, band, 32.0, identity, (900, 200))
    assert len(pieces) == 12


def test_a_rejected_glyph_is_read_from_its_tight_window():
    """A glyph called other print (a stub of touching print) takes its tight window's reading."""
    model = rejecting_model()
    image = np.zeros((32, 32), np.float32)
    seg = Segmentation(size=(400, 100))
    seg.lines = [
        [Glyph(10 * i, 40, 10 * i + 8, 50, image) for i in range(3)],
        [Glyph(10 * i, 0, 10 * i + 8, 10, image) for i in range(3)],  # other print
    ]
    seg.lines[0][1].tight = image
    for g in seg.lines[1]:
        g.tight = image
    assert seg.tensor().shape[0] == 6 + 4
    reject = len(DEFAULT_CHARSET)
    # Full windows: 1 ? 3, then three rejects; tight windows: 2, then 7 7 7.
    picks = [1, reject, 3, reject, reject, reject, 2, 7, 7, 7]
    probs = np.eye(len(DEFAULT_CHARSET) + 1, dtype=np.float32)[picks]
    result = model.postprocess(probs, seg)
    # The other print stays dropped: whether a line is print is decided on its full windows.
    assert [line["text"] for line in result["lines"]] == ["123"]


def test_a_glyph_broken_into_specks_is_one_piece():
    """A thin asterisk that binarizes into dots too small for a glyph each is kept as one piece."""
    binary = np.zeros((200, 600), np.uint8)
    for k in range(10):
        binary[80:112, 20 + 36 * k : 40 + 36 * k] = 1
    # Five 3x3 dots on a ring of radius 6 around (x 400, y 90): each 9 pixels, under a glyph's least.
    for a in np.linspace(0, 2 * np.pi, 5, endpoint=False):
        cx, cy = int(400 + 6 * np.sin(a)), int(90 - 6 * np.cos(a))
        binary[cy - 1 : cy + 2, cx - 1 : cx + 2] = 1
    binary[100:103, 500:503] = 1  # a lone speck stays out
    band = Band(np.array([80.0]), np.array([112.0]), 30.0, 354.0)
    identity = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    pieces, *_ = band_pieces(binary, band, 32.0, identity, (600, 200))
    assert len(pieces) == 11
    star = max(pieces, key=lambda p: p.x0)
    assert len(star.ids) == 5 and star.x0 >= 392 and star.x1 <= 408


def test_a_rejected_glyph_on_the_pitch_is_kept_and_one_off_it_dropped():
    """A glyph called other print that sits a pitch from its neighbours is read as its likely character."""
    model = rejecting_model()
    image = np.zeros((32, 32), np.float32)
    seg = Segmentation(size=(400, 100))
    # Glyphs every 20 px; one more 5 px past the fourth (other print squeezed between glyphs).
    xs = [0, 20, 40, 60, 65, 80]
    seg.lines = [[Glyph(x, 40, x + 12, 60, image) for x in xs]]
    reject = len(DEFAULT_CHARSET)
    probs = np.eye(len(DEFAULT_CHARSET) + 1, dtype=np.float32)[[1, 2, reject, 4, reject, 5]]
    for k in (2, 4):  # both: other print 0.6, then "7" at 0.35
        probs[k] = 0.0
        probs[k, reject], probs[k, 7] = 0.6, 0.35
    result = model.postprocess(probs, seg)
    assert result["lines"][0]["text"] == "12745"
    assert result["characters"][2]["confidence"] == pytest.approx(0.35)
    # A glyph whose best character is unlikely stays out.
    probs[2, reject], probs[2, 7] = 0.97, 0.02
    assert model.postprocess(probs, seg)["lines"][0]["text"] == "1245"


def test_a_space_with_other_print_in_it_is_kept():
    """Other print dropped from a gap splits it into steps under a space's: the space counts the whole gap."""
    model = rejecting_model()
    image = np.zeros((32, 32), np.float32)
    seg = Segmentation(size=(400, 100))
    # Pitch 20: glyphs at 0, 20, 40, other print at 60, then a glyph at 80 after one space.
    seg.lines = [[Glyph(x, 40, x + 12, 60, image, advance=x and 1.0) for x in (0, 20, 40, 60, 80)]]
    reject = len(DEFAULT_CHARSET)
    probs = np.eye(len(DEFAULT_CHARSET) + 1, dtype=np.float32)[[1, 2, 3, reject, 4]]
    assert model.postprocess(probs, seg)["lines"][0]["text"] == "123 4"


def test_a_short_line_keeps_its_one_space():
    """Three glyphs, one space: steps of one and two pitches; the pitch is the short step."""
    binary = np.zeros((200, 400), np.uint8)
    for x in (20, 56, 128):  # pitch 36: glyph, glyph, space, glyph
        binary[80:112, x : x + 20] = 1
    band = Band(np.array([80.0]), np.array([112.0]), 30.0, 138.0)
    identity = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    pieces, labels, offset, _ = band_pieces(binary, band, 32.0, identity, (400, 200))
    glyphs = line_glyphs(pieces, labels, band, offset)
    assert [g.spaces_before for g in glyphs] == [0, 0, 1]


def test_of_two_rejected_pieces_of_one_glyph_the_likelier_is_kept():
    """A closing asterisk broken in two pieces, both called other print: the likelier piece is read."""
    model = rejecting_model()
    image = np.zeros((32, 32), np.float32)
    seg = Segmentation(size=(400, 100))
    seg.lines = [[Glyph(x, 40, x + 12, 60, image) for x in (0, 20, 40, 60, 66)]]
    reject, star, less = len(DEFAULT_CHARSET), DEFAULT_CHARSET.index("*"), DEFAULT_CHARSET.index("<")
    probs = np.eye(len(DEFAULT_CHARSET) + 1, dtype=np.float32)[[1, 2, 3, reject, reject]]
    probs[3, reject], probs[3, star] = 0.67, 0.33
    probs[4, reject], probs[4, less] = 0.82, 0.18
    assert model.postprocess(probs, seg)["lines"][0]["text"] == "123*"


def test_spaces_follow_glyph_steps_that_drift_along_the_line():
    """Steps that grow to 1.3 pitches (a keystone the band misses): a space there is one, not two."""
    image = np.zeros((32, 32), np.float32)
    steps = [0.0, *np.linspace(1.0, 1.3, 12)[:-1], 2.6, 1.3, 1.3]
    glyphs = [Glyph(0, 0, 10, 10, image, advance=float(a)) for a in steps]
    count_spaces(glyphs)
    assert [g.spaces_before for g in glyphs] == [0] * 12 + [1, 0, 0]


def test_short_or_mixed_lines_beside_a_clean_line_are_dropped():
    """Other print read as a line (a few glyphs, or 30%+ of them other print) goes when a clean line is found."""
    model = rejecting_model()
    image = np.zeros((32, 32), np.float32)
    seg = Segmentation(size=(400, 200))
    reject = len(DEFAULT_CHARSET)
    seg.lines = [
        [Glyph(20 * i, 0, 20 * i + 12, 20, image) for i in range(3)],  # short
        [Glyph(20 * i, 50, 20 * i + 12, 70, image) for i in range(10)],  # clean
        [Glyph(20 * i, 100, 20 * i + 12, 120, image) for i in range(10)],  # 3 of 10 other print
    ]
    picks = [1, 2, 3] + [4] * 10 + [5] * 7 + [reject] * 3
    probs = np.eye(reject + 1, dtype=np.float32)[picks]
    assert [line["text"] for line in model.postprocess(probs, seg)["lines"]] == ["4" * 10]
    # Alone, a short line is kept.
    seg.lines = seg.lines[:1]
    assert [line["text"] for line in model.postprocess(probs[:3], seg)["lines"]] == ["123"]


def test_a_band_follows_its_midline_past_its_ends(monkeypatch):
    """Glyphs past a tilted band's end keep their whole height: the band goes on along its slope."""
    binary = np.zeros((260, 700), np.uint8)
    for k in range(13):  # a line rising 0.1 px per px, cap 32; the band is fitted to the first 8 only
        x = 20 + 36 * k
        top = int(round(80 + 0.1 * (x + 10)))
        binary[top : top + 32, x : x + 20] = 1
    band = Band(np.array([0.1, 80.0]), np.array([0.1, 112.0]), 30.0, 30.0 + 36 * 7)
    identity = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    pieces, *_ = band_pieces(binary, band, 32.0, identity, (700, 260))
    assert len(pieces) == 13 and min(p.h for p in pieces) >= 31
    # Held flat past its end (as before), the band cut the later glyphs' bottoms off.
    monkeypatch.setattr("models.ocr_band.EXTEND", False)
    pieces, *_ = band_pieces(binary, band, 32.0, identity, (700, 260))
    assert min(p.h for p in pieces) < 28
    t, b = band.at(np.array([0.0, 500.0]))
    np.testing.assert_allclose([t[0], b[0]], [83.0, 115.0])  # flat: the values at the ends


def test_a_stub_of_print_split_off_a_glyph_is_not_a_glyph(monkeypatch):
    """Print touching a glyph's top and running on over the space: the part split off is dropped."""
    binary = np.zeros((200, 420), np.uint8)
    for k in (0, 1, 2, 3, 4, 6, 7, 8, 9):  # a space where the sixth glyph would be
        binary[80:112, 20 + 36 * k : 40 + 36 * k] = 1
    binary[76:82, 164:216] = 1  # a stub of print above, from glyph 5's top over the space
    band = Band(np.array([80.0]), np.array([112.0]), 30.0, 354.0)
    identity = np.array([[1.0, 0, 0], [0, 1.0, 0]])

    def cut() -> list:
        pieces, labels, offset, _ = band_pieces(binary, band, 32.0, identity, (420, 200))
        return line_glyphs(pieces, labels, band, offset)

    glyphs = cut()
    assert len(glyphs) == 9 and [g.spaces_before for g in glyphs].index(1) == 5
    monkeypatch.setattr("models.ocr_line.SPLIT_STUBS", False)
    assert len(cut()) == 10  # the stub was a glyph in the space
