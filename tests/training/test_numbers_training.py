"""Smoke test of training/numbers.py: one epoch on the committed sample, every output written."""

from __future__ import annotations

import io
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SAMPLE = Path(__file__).parents[1] / "data" / "numbers" / "train_sample.npz"


def drawing(label_digit: np.ndarray) -> Image.Image:
    """Turn an MNIST digit into a gallery-like drawing: big, black on white, RGB."""
    big = np.asarray(Image.fromarray(255 - label_digit).resize((140, 140)))
    return Image.fromarray(big).convert("RGB")


@pytest.mark.tensorflow
@pytest.mark.slow
def test_one_epoch_writes_model_onnx_card_and_plots(tmp_path, monkeypatch, eager_keras):
    pytest.importorskip("tensorflow")
    from models.numbers import NumbersModel
    from training import numbers

    # Stand in for the gallery's export reader: two digits and one label that is not a digit.
    with np.load(SAMPLE) as d:
        extra = [(drawing(d["x_train"][0]), str(d["y_train"][0])), (drawing(d["x_train"][1]), "cat")]
    fake = types.ModuleType("training.gallery_export")
    fake.load_labelled_images = lambda path: extra
    monkeypatch.setitem(sys.modules, "training.gallery_export", fake)

    out = tmp_path / "models"
    numbers.main(
        ["--data", str(SAMPLE), "--epochs", "1", "--val", "40", "--out", str(out), "--extra", "fake.zip"]
    )

    for name in (
        "numbers.keras",
        "numbers.onnx",
        "numbers.md",
        "numbers_confusion.png",
        "numbers_curves.png",
    ):
        assert (out / name).stat().st_size > 0, name
    card = (out / "numbers.md").read_text()
    for needle in ("MNIST test", "python -m training.numbers", "numbers_confusion.png", "numbers_curves.png"):
        assert needle in card
    assert "plus 1 labelled gallery drawings" in card
    assert numbers.card_text(json.loads((out / "numbers_metrics.json").read_text())) == card
    for png in ("numbers_confusion.png", "numbers_curves.png"):
        Image.open(io.BytesIO((out / png).read_bytes())).verify()

    # The exported ONNX file is servable as it is.
    model = NumbersModel("numbers", out / "numbers.onnx")
    model.warmup()
    with np.load(SAMPLE) as d:
        result = model(255 - d["x_test"][0], top=3)
    assert 0 <= result["prediction"] <= 9 and len(result["top"]) == 3


def test_fixture_writer_makes_canvas_digits(tmp_path):
    from training.numbers import write_fixtures

    with np.load(SAMPLE) as d:
        x, y = d["x_train"], d["y_train"].astype(np.int64)
    write_fixtures(x, y, x, y, tmp_path)
    rows = json.loads((tmp_path / "canvas_digits.json").read_text())
    assert {row["label"] for row in rows} == set(range(10))
    assert all(row["image"].startswith("data:image/png;base64,") for row in rows)
