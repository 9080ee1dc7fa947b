"""Images whose pixels, not their size on the wire, would make OCR's segmentation cost too much.

A few kilobytes of PNG can hold a 4000x4000 pattern: rows of dots, a grid of glyph-sized blocks, 1%
random specks. Before these limits such images cost a worker up to 30 s of CPU (a row of dots
grouped as one piece as wide as the image, cut into a window of the whole image for each of its
1,400 glyphs, 77 MB each) or a 500 (a pairwise matrix over 100,000 specks: 75 GiB). Memory is
measured with tracemalloc (NumPy reports its buffers to it), never time.
"""

from __future__ import annotations

import tracemalloc

import cv2
import numpy as np
import pytest

from models.ocr_band import TooMuchText, _near_counts, fit_rows
from models.ocr_line import GLYPH_SIZE, WINDOW, _glyph_image, _Piece
from models.ocr_segment import COMPONENTS_PER_GLYPH, segment
from models.runtime import ModelInputError

MiB = 1024 * 1024


def png(gray: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", gray, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert ok
    return data.tobytes()


def peak_bytes(fn, *args, **kwargs):
    """Run fn; return its result (or the exception it raised) and the peak traced allocation."""
    tracemalloc.start()
    try:
        result = fn(*args, **kwargs)
    except Exception as exc:  # the caller checks which
        result = exc
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return result, peak


def dots(side: int, step: int) -> np.ndarray:
    gray = np.full((side, side), 255, np.uint8)
    gray[::step, ::step] = 0
    return gray


def test_a_piece_as_wide_as_the_image_gets_a_small_window():
    # A piece 3000 px wide and 20 high (a row of dots grouped as specks): its window was a
    # 3300x3300 float32 canvas (43 MB) before it was shrunk to 32x32.
    labels = np.zeros((400, 3000), np.int32)
    labels[200:220, ::3] = 7
    piece = _Piece([7], 0, 200, 3000, 220)
    image, peak = peak_bytes(_glyph_image, piece, labels, 210.0, 32.0)
    assert image.shape == (GLYPH_SIZE, GLYPH_SIZE)
    assert peak < 4 * MiB
    assert 0 < image.max() <= 1 and image[GLYPH_SIZE // 2].sum() > 0  # the row is drawn, across


def whole_window(p: _Piece, labels: np.ndarray, mid: float, cap: float) -> np.ndarray | None:
    """The window as it was cut before: from the whole window, every pixel tested against the piece."""
    side = int(round(max(WINDOW * cap, 1.1 * p.w, 1.1 * p.h)))
    cx = int(round(p.cx))
    cy = int(round(mid)) if abs(p.y0 + p.h / 2 - mid) < 0.6 * side - p.h / 2 else int(round(p.y0 + p.h / 2))
    wx0, wy0 = cx - side // 2, cy - side // 2
    canvas = np.zeros((side, side), np.float32)
    sx0, sy0 = max(wx0, 0), max(wy0, 0)
    sx1, sy1 = min(wx0 + side, labels.shape[1]), min(wy0 + side, labels.shape[0])
    crop = np.isin(labels[sy0:sy1, sx0:sx1], p.ids)
    if not crop.any():
        return None
    canvas[sy0 - wy0 : sy1 - wy0, sx0 - wx0 : sx1 - wx0] = crop
    return cv2.resize(canvas, (GLYPH_SIZE, GLYPH_SIZE), interpolation=cv2.INTER_AREA)


def test_a_glyphs_window_is_what_it_was():
    # The window now reads only the piece's box (its pixels cannot lie outside it): on glyph-sized
    # pieces, among other pieces crossing their windows, near the image's edges, the same window.
    rng = np.random.default_rng(3)
    for _ in range(200):
        labels = np.zeros((90, 120), np.int32)
        boxes = []
        for label in (1, 2, 3):
            x0, y0 = int(rng.integers(-10, 110)), int(rng.integers(-10, 80))
            x1, y1 = x0 + int(rng.integers(3, 40)), y0 + int(rng.integers(3, 45))
            cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, 120), min(y1, 90)
            if cx1 > cx0 and cy1 > cy0:
                labels[cy0:cy1, cx0:cx1][rng.random((cy1 - cy0, cx1 - cx0)) < 0.6] = label
                ys, xs = np.nonzero(labels == label)
                if ys.size:
                    boxes.append(
                        _Piece([label], int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
                    )
        for piece in boxes:
            mid, cap = float(rng.uniform(0, 90)), float(rng.uniform(8, 40))
            old, new = whole_window(piece, labels, mid, cap), _glyph_image(piece, labels, mid, cap)
            assert (old is None) == (new is None)
            if old is not None:
                assert np.array_equal(old, new)


def test_near_counts_match_the_pairwise_count():
    rng = np.random.default_rng(5)
    mids = rng.integers(0, 400, 500) / 2  # half-pixel centres, with ties
    for radius in (0.5, 3.5, 11.2):
        pairwise = (np.abs(mids[:, None] - mids[None, :]) < radius).sum(axis=1)
        assert np.array_equal(_near_counts(mids, radius), pairwise)


def test_rows_of_a_hundred_thousand_specks_take_linear_memory():
    rng = np.random.default_rng(6)
    n = 100_000
    x, y = rng.integers(0, 4000, n), rng.integers(0, 4000, n)
    w = h = np.full(n, 30)
    result, peak = peak_bytes(fit_rows, x, y, w, h, 30.0, 64)
    assert isinstance(result, TooMuchText)
    assert peak < 64 * MiB  # the pairwise matrix was 75 GiB


def test_a_group_of_more_rows_than_a_page_holds_is_refused():
    # 80 rows of 3 cap-high components each, half a cap below each other (one group of overlapping rows).
    x = np.tile([0, 40, 80], 80)
    y = np.repeat(np.arange(80) * 20, 3)
    w, h = np.full(240, 20), np.full(240, 40)
    with pytest.raises(TooMuchText):
        fit_rows(x, y, w, h, 40.0, max_rows=64)
    assert len(fit_rows(x, y, w, h, 40.0)) >= 64  # without a limit (training), every row is found


@pytest.mark.parametrize(
    "gray",
    [
        dots(4000, 3),  # 29 KB of PNG: 30 s of CPU before
        np.where(np.random.default_rng(1).random((3000, 3000)) < 0.01, 0, 255).astype(np.uint8),  # a 500
    ],
    ids=["dots every 3 px", "1% random specks"],
)
def test_patterns_are_refused_as_too_much_text_in_bounded_memory(gray):
    result, peak = peak_bytes(segment, gray, max_glyphs=4000)
    assert isinstance(result, ModelInputError), result
    assert result.code == "too_much_text" and result.status == 422
    assert peak < 600 * MiB  # the working copies of a 4000x4000 image (a window alone was 77 MB)


def test_too_many_components_are_refused_before_rows_are_fitted():
    # A grid of glyph-sized blocks: more components than COMPONENTS_PER_GLYPH x the glyph limit.
    gray = np.full((1200, 1200), 255, np.uint8)
    for top in range(0, 1200, 12):
        for left in range(0, 1200, 8):
            gray[top + 2 : top + 10, left + 2 : left + 6] = 0
    with pytest.raises(ModelInputError) as err:
        segment(gray, max_glyphs=(1200 // 12) * (1200 // 8) // (2 * COMPONENTS_PER_GLYPH))
    assert err.value.code == "too_much_text"


def test_the_route_answers_422_json_for_too_much_text(client):
    gray = np.full((1500, 1500), 255, np.uint8)
    for top in range(0, 1500, 15):
        for left in range(0, 1500, 10):
            gray[top + 3 : top + 12, left + 2 : left + 7] = 0  # 15,000 glyph-sized blocks
    r = client.post("/api/ocr", data=png(gray), content_type="image/png")
    assert r.status_code == 422, r.get_data(as_text=True)[:300]
    assert r.is_json and r.get_json()["code"] == "too_much_text"
    assert "crop it to the lines" in r.get_json()["error"]


def test_the_route_answers_a_row_of_dots_in_bounded_memory(client):
    r, peak = peak_bytes(client.post, "/api/ocr", data=png(dots(4000, 3)), content_type="image/png")
    assert r.status_code == 422 and r.get_json()["code"] == "too_much_text"
    assert peak < 600 * MiB


@pytest.mark.parametrize("shape", [(8, 40000), (40000, 8), (8, 400000), (400000, 8), (9, 30000)])
@pytest.mark.parametrize("fill", ["white", "noise", "dots"])
def test_strips_thousands_of_times_longer_than_high_are_read_not_crashed_on(shape, fill):
    # An 8x40000 strip shrunk to 900 px for the polarity check rounded to 0 px high (an OpenCV
    # assertion, a 500); a cap shrunk under 4 px made a 0-px rule kernel (another).
    gray = np.full(shape, 255, np.uint8)
    if fill == "noise":
        gray = np.random.default_rng(7).integers(0, 256, shape).astype(np.uint8)
    elif fill == "dots":
        gray[::3, ::3] = 0
    try:
        segment(gray, max_glyphs=4000)
    except ModelInputError as err:
        assert err.status == 422


def test_the_route_answers_a_thin_strip(client):
    gray = np.full((8, 40000), 255, np.uint8)
    gray[:, ::50] = 0
    r = client.post("/api/ocr", data=png(gray), content_type="image/png")
    assert r.status_code in (200, 422), r.get_data(as_text=True)[:300]
    assert r.is_json
