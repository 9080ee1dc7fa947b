"""training/numbers_eval.py: the digit model's out-of-collection sets, read through /api/predict."""

from __future__ import annotations

import gzip
import json
import shutil

import numpy as np
import pytest

from training import numbers_eval
from training.quantize import app_client


@pytest.fixture(scope="module")
def client():
    from config import served_path

    return app_client("numbers", served_path("numbers"))[1]


def test_committed_optdigits_is_uci_test_set():
    counts, labels = numbers_eval.load_optdigits()
    assert counts.shape == (1797, 8, 8) and counts.dtype == np.uint8
    assert counts.max() == 16 and counts.min() == 0
    # optdigits.tes's class counts (UCI's documentation).
    assert np.bincount(labels).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


def test_csv_reader_round_trip_and_refusals(tmp_path):
    counts, labels = numbers_eval.load_optdigits()
    rows = np.concatenate([counts[:5].reshape(5, 64), labels[:5, None]], axis=1)
    text = "\n".join(",".join(map(str, r)) for r in rows)
    (tmp_path / "d.csv.gz").write_bytes(gzip.compress(text.encode()))
    (tmp_path / "d.csv").write_text(text)
    for name in ("d.csv.gz", "d.csv"):
        c, y = numbers_eval.read_optdigits_csv(tmp_path / name)
        assert (c == counts[:5]).all() and (y == labels[:5]).all()
    bad = rows.copy()
    bad[0, 3] = 17  # a count over 16: not optdigits
    (tmp_path / "bad.csv").write_text("\n".join(",".join(map(str, r)) for r in bad))
    with pytest.raises(ValueError, match="not optdigits"):
        numbers_eval.read_optdigits_csv(tmp_path / "bad.csv")
    (tmp_path / "short.csv").write_text("1,2,3\n4,5,6\n")
    with pytest.raises(ValueError, match="not optdigits"):
        numbers_eval.read_optdigits_csv(tmp_path / "short.csv")


def test_optdigit_canvas_is_black_ink_centred_on_white():
    counts, _ = numbers_eval.load_optdigits()
    canvas = numbers_eval.optdigit_canvas(counts[0])
    assert canvas.shape == (280, 280) and canvas.dtype == np.uint8
    assert (canvas[:40] == 255).all() and (canvas[:, -40:] == 255).all()  # margins stay white
    ink = np.argwhere(canvas < 128)
    assert len(ink) > 1000
    assert abs(ink[:, 1].mean() - 140) < 40 and abs(ink[:, 0].mean() - 140) < 40


def test_optdigits_read_through_the_route(client):
    """The first 200 digits of another collection, through POST /api/predict: most read right.

    The whole set reads 96-97% (the card); a preprocessing that broke on blurred, scaled-up strokes
    would fall far below this.
    """
    counts, labels = numbers_eval.load_optdigits()
    images = [numbers_eval.optdigit_canvas(c) for c in counts[:200]]
    rows = numbers_eval.evaluate(client, {"optdigits": (images, [int(v) for v in labels[:200]])}, [], {})
    ours = rows["optdigits"]["ours"]
    assert ours["n"] == 200
    assert ours["accuracy"] >= 92.0
    assert ours["best_guess"] >= ours["accuracy"]
    assert ours["answered"] >= ours["accuracy"]
    assert len(ours["per_digit"]) == 10


def test_peers_are_read_from_the_cache(client):
    counts, labels = numbers_eval.load_optdigits()
    images = [numbers_eval.optdigit_canvas(c) for c in counts[:3]]
    import hashlib

    cache = {
        f"tesseract/{hashlib.sha1(im.tobytes()).hexdigest()}": [str(int(y)) if k else "7 1", 12.0]
        for k, (im, y) in enumerate(zip(images, labels[:3], strict=True))
    }
    rows = numbers_eval.evaluate(
        client, {"optdigits": (images, [int(v) for v in labels[:3]])}, ["tesseract"], cache
    )
    peer = rows["optdigits"]["tesseract"]
    # The first answer is two characters: wrong; the other two are the digit.
    assert peer["right"] == 2 and peer["answered"] == 100.0 and peer["cpu_ms"] == 12.0


def test_a_wrong_answer_and_a_refusal_score_as_wrong():
    scored = numbers_eval.score([1, 2, 3, 4], [1, None, 5, ""], [1.0, 2.0, 3.0, 4.0])
    assert scored["right"] == 1 and scored["accuracy"] == 25.0 and scored["answered"] == 50.0
    assert scored["cpu_ms"] == 2.5


def test_missing_fonts_name_their_packages(tmp_path):
    with pytest.raises(SystemExit, match="fonts-bwht"):
        numbers_eval.find_handwriting_fonts(tmp_path)


@pytest.mark.skipif(
    not shutil.which("fc-list"),
    reason="no fontconfig: the handwriting fonts are not installed (make system-deps)",
)
def test_font_digits_are_drawn_alike_for_a_seed():
    try:
        fonts = numbers_eval.find_handwriting_fonts(numbers_eval.Path("/usr/share/fonts"))
    except SystemExit as missing:
        pytest.skip(str(missing))
    path = fonts["dkg.ttf"]
    a = numbers_eval.font_digit(path, 4, np.random.default_rng(3))
    b = numbers_eval.font_digit(path, 4, np.random.default_rng(3))
    c = numbers_eval.font_digit(path, 4, np.random.default_rng(4))
    assert a.shape == (280, 280) and (a == b).all() and not (a == c).all()
    assert (a < 128).sum() > 500 and a[0, 0] == 255


def test_card_shows_the_collections_table():
    from pathlib import Path

    from training import numbers

    metrics = json.loads((Path(numbers_eval.ROOT) / "models" / "numbers_metrics.json").read_text())
    assert "collections" in metrics, (
        "run python -m training.numbers_eval --metrics models/numbers_metrics.json"
    )
    card = numbers.card_text(metrics)
    assert "## Digits from other collections" in card
    for name in ("optdigits", "fonts", "canvas"):
        row = metrics["collections"]["sets"][name]
        assert f"**{row['ours']['accuracy']:.2f}%**" in card


def test_grouped_sets_are_scored_per_group(client):
    counts, labels = numbers_eval.load_optdigits()
    images = [numbers_eval.optdigit_canvas(c) for c in counts[:6]]
    groups = ["a", "a", "a", "b", "b", "b"]
    rows = numbers_eval.evaluate(client, {"s": (images, [int(v) for v in labels[:6]], groups)}, [], {})
    assert list(rows["s"]["ours"]["per_group"]) == ["a", "b"]
    assert numbers_eval.per_group([1, 2, 3, 4], [1, 2, 0, None], ["x", "x", "y", "y"]) == {
        "x": 100.0,
        "y": 0.0,
    }
