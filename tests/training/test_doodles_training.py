"""Smoke test of training/doodles.py on the committed held-out doodles (seconds, TensorFlow only)."""

from __future__ import annotations

import json
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "data" / "doodles"


@pytest.mark.tensorflow
@pytest.mark.slow
def test_training_smoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, eager_keras) -> None:
    pytest.importorskip("tensorflow")
    from models.doodles import DoodleModel
    from training import doodles

    # --extra reads gallery exports through training.gallery_export; stand in for it here.
    drawing = Image.open(FIXTURES / "canvas" / "135_cat.png").convert("L")
    blank = Image.new("L", (280, 280), 255)
    gallery = types.ModuleType("training.gallery_export")
    gallery.load_labelled_images = lambda path: [(drawing, "cat"), (blank, "cat"), (drawing, "unicorn")]
    monkeypatch.setitem(sys.modules, "training.gallery_export", gallery)

    # The serving-path check on three of the committed canvases (all 360 take seconds).
    canvases = tmp_path / "canvases"
    (canvases / "canvas").mkdir(parents=True)
    rows = (FIXTURES / "labels.csv").read_text(encoding="utf-8").splitlines()
    for row in rows[1:4]:
        shutil.copyfile(FIXTURES / row.split(",")[0], canvases / row.split(",")[0])
    (canvases / "labels.csv").write_text("\n".join(rows[:4]) + "\n", encoding="utf-8")

    out = tmp_path / "models"
    results = doodles.main(
        [
            "--data", str(FIXTURES / "doodles_28.npz"),
            "--out", str(out),
            "--limit", "8",
            "--epochs", "1",
            "--batch-size", "32",
            "--extra", str(tmp_path / "gallery.zip"),
            "--canvas-check", str(canvases),
        ]
    )  # fmt: skip

    for name in ("doodles.keras", "doodles.onnx", "doodles_labels.txt", "doodles.md"):
        assert (out / name).stat().st_size > 0, name
    for name in ("doodles_confusion.png", "doodles_curves.png"):
        assert Image.open(out / name).format == "PNG"
    names = (out / "doodles_labels.txt").read_text(encoding="utf-8").splitlines()
    assert len(names) == 24 and names[9] == "cat"
    assert results["n_test"] == 24 and results["n_train"] == 24 * 6 + 1
    assert 0.0 <= results["top1"] <= results["top3"] <= 1.0
    assert results["onnx_diff"] < 1e-4
    card = (out / "doodles.md").read_text(encoding="utf-8")
    assert "top-3 accuracy" in card and "python -m training.doodles --data" in card
    assert "1 gallery-labelled drawings" in card
    assert results["canvas"]["n"] == 3 and "on 3 canvas-like renderings" in card
    assert doodles.card_text(json.loads((out / "doodles_metrics.json").read_text())) == card

    # Half the training samples came through a canvas simulation and the served preprocessing.
    assert results["canvas_fraction"] == 0.5 and "replaced by a canvas simulation" in card

    model = DoodleModel("doodles", out / "doodles.onnx", labels=out / "doodles_labels.txt")
    result = model(np.asarray(drawing))
    assert result["label"] in names and len(result["top"]) == 3
    # The exported graph averages each drawing with its mirror image.
    with np.load(FIXTURES / "doodles_28.npz") as d:
        x = d["x"][:8].astype(np.float32)[..., None]
    np.testing.assert_allclose(model.predict(x), model.predict(x[:, :, ::-1]), atol=1e-6)


def test_canvas_simulation_goes_through_the_served_preprocessing() -> None:
    from training.doodle_canvas import simulate_many

    with np.load(FIXTURES / "doodles_28.npz") as d:
        x = d["x"][::30]
    sims = simulate_many(x, seed=5, processes=1)
    assert sims.shape == x.shape and sims.dtype == np.uint8
    np.testing.assert_array_equal(sims, simulate_many(x, seed=5, processes=1))
    # Served bitmaps: ink on the long side spans pixels 1-26 as in the dataset, never the border.
    assert sims[:, 0, :].max() == sims[:, -1, :].max() == sims[:, :, 0].max() == 0
    # Each pen still draws the same drawing: the outline pen keeps its pixels closest, the pen that
    # follows centre lines loses detail (merged strokes, filled areas drawn as lines) by design.
    for centre_line, least in ((0.0, 0.8), (1.0, 0.75)):
        pen = simulate_many(x, seed=5, processes=1, centre_line=centre_line)
        corr = [np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(x.astype(float), pen, strict=True)]
        assert np.median(corr) > least, centre_line


def test_split_is_stratified_and_disjoint() -> None:
    from training.doodle_data import stratified_split

    y = np.repeat(np.arange(3), [800, 2500, 4500])
    train, val, test = stratified_split(y, 0.1, 0.05, seed=1)
    assert len(set(train) | set(val) | set(test)) == len(y) == len(train) + len(val) + len(test)
    assert np.bincount(y[test]).tolist() == [80, 250, 450]
    assert np.bincount(y[val]).tolist() == [40, 125, 225]
    again = stratified_split(y, 0.1, 0.05, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again, strict=True))


def test_class_weights_favour_small_classes() -> None:
    from training.doodle_data import class_weights

    y = np.repeat(np.arange(2), [100, 400])
    full = class_weights(y, 2, power=1.0)
    assert full[0] * 100 == pytest.approx(full[1] * 400)
    soft = class_weights(y, 2)
    assert soft[0] / soft[1] == pytest.approx(2.0)
    for weights in (full, soft):
        assert np.mean([weights[c] for c in y]) == pytest.approx(1.0)


def test_strokes_holdout_drops_exactly_the_fixture_rows_from_train_and_val() -> None:
    from training.doodle_data import drop_rows, stratified_split

    y = np.repeat(np.arange(3), [200, 300, 400])
    src = np.concatenate([np.arange(200), np.arange(300), np.arange(400)])
    keys = {(c, s) for c in range(3) for s in range(25)}
    keys.add((1, 999))  # a drawing the data does not hold drops nothing
    train, val, test = stratified_split(y, 0.1, 0.05, seed=3)
    (kept_train, kept_val), dropped = drop_rows((train, val), y, src, keys)
    in_fixture = np.array([(c, s) in keys for c, s in zip(y, src, strict=True)])
    assert dropped == [int(in_fixture[train].sum()), int(in_fixture[val].sum())] and sum(dropped) > 0
    assert not in_fixture[kept_train].any() and not in_fixture[kept_val].any()
    # Everything else stays, in order; the test split is not touched, fixture rows in it included.
    np.testing.assert_array_equal(kept_train, train[~in_fixture[train]])
    np.testing.assert_array_equal(kept_val, val[~in_fixture[val]])
    assert sum(dropped) + int(in_fixture[test].sum()) == 75


def test_strokes_holdout_is_on_by_default_and_reads_all_600_drawings() -> None:
    from training.doodles import STROKES, fixture_keys, parse_args

    assert parse_args(["--data", "x.npz"]).strokes_holdout == STROKES
    assert parse_args(["--data", "x.npz", "--no-strokes-holdout"]).strokes_holdout is None
    names = (ROOT / "models" / "doodles_labels.txt").read_text(encoding="utf-8").splitlines()
    keys = fixture_keys(STROKES, names)
    assert len(keys) == 600 and keys == {(c, s) for c in range(24) for s in range(25)}  # clock = alarm clock


@pytest.mark.tensorflow
def test_width_scales_every_layer_of_the_cnn() -> None:
    pytest.importorskip("tensorflow")
    from training.doodle_model import build_model

    for width, sizes in ((1.0, [32, 64, 64, 128, 128, 256]), (1.25, [40, 80, 80, 160, 160, 320])):
        model = build_model(24, width)
        kernels = [layer.kernel.shape[-1] for layer in model.layers if layer.name.startswith(("conv", "fc"))]
        assert kernels == sizes, width
        assert model.output_shape == (None, 24)


@pytest.mark.tensorflow
@pytest.mark.slow
def test_ema_weights_are_the_ones_kept_and_exported(tmp_path: Path, eager_keras) -> None:
    pytest.importorskip("tensorflow")
    import keras

    from training import doodles
    from training.doodle_model import unwrap
    from training.export import onnx_predict

    out = tmp_path / "models"
    results = doodles.main(
        [
            "--data", str(FIXTURES / "doodles_28.npz"),
            "--out", str(out),
            "--limit", "8",
            "--epochs", "3",
            "--batch-size", "16",
            "--canvas-fraction", "0",
            "--canvas-check", str(tmp_path / "none"),
            "--width", "0.5",
            "--ema", "0.8",
        ]
    )  # fmt: skip
    # Validation ran on the averaged weights; the kept weights reproduce the best epoch's validation
    # loss, which the raw (last-step) weights would not: the stopper kept the EMA weights, not the raw ones.
    best = results["best_epoch"] - 1
    assert results["val_loss_kept"] == pytest.approx(results["history"]["val_loss"][best], rel=1e-4)
    assert results["val_top1_kept"] == pytest.approx(results["history"]["val_accuracy"][best])
    assert results["width"] == 0.5 and results["ema"] == 0.8
    assert "--width 0.5 --ema 0.8" in results["command"]
    cnn = unwrap(keras.models.load_model(out / "doodles.keras"))
    assert cnn.get_layer("conv1_1").kernel.shape[-1] == 16 and cnn.get_layer("fc").kernel.shape[-1] == 128
    # The ONNX file holds the same (kept) weights as the Keras file.
    with np.load(FIXTURES / "doodles_28.npz") as d:
        x = d["x"][:16].astype(np.float32)[..., None]
    saved = keras.models.load_model(out / "doodles.keras")
    np.testing.assert_allclose(onnx_predict(out / "doodles.onnx", x), saved.predict(x, verbose=0), atol=1e-5)


def test_keep_rule_times_candidate_and_served_side_by_side(tmp_path: Path) -> None:
    from training.doodles_eval import keep_rule

    models = ROOT / "models"
    served = json.loads((models / "doodles_metrics.json").read_text(encoding="utf-8"))
    candidate = tmp_path / "candidate"
    candidate.mkdir()
    shutil.copyfile(models / "doodles.onnx", candidate / "doodles.onnx")
    with np.load(FIXTURES / "doodles_28.npz") as d:
        x = d["x"][:10]
    for top1, passed in ((served["top1"], True), (served["top1"] - 0.001, False)):
        (candidate / "doodles_metrics.json").write_text(json.dumps({"top1": top1}), encoding="utf-8")
        rule = keep_rule(candidate, x, calls=20, served=models)
        # The same graph timed against itself: the same cost, within timing noise.
        assert 0.5 < rule["ratio"] < 2.0 and len({rule["served_top1"], served["top1"]}) == 1
        assert rule["passed"] is passed and rule["served_version"] == served["version"]
