"""The int8 doodle model: made from the committed float file, and served in its place (no TensorFlow)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from training.export import onnx_metadata, onnx_predict
from training.quantize import quantize

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"
FIXTURES = ROOT / "tests" / "data" / "doodles"


def _bitmaps() -> tuple[np.ndarray, np.ndarray]:
    with np.load(FIXTURES / "doodles_28.npz") as d:
        return d["x"].astype(np.float32)[..., None], d["y"]


def test_quantize_writes_an_int8_file_that_answers_as_the_float_one(tmp_path: Path) -> None:
    x, _ = _bitmaps()
    target = tmp_path / "doodles.int8.onnx"
    # Calibrated on 40 of the fixtures, checked on the other 320.
    made = quantize(MODELS / "doodles.onnx", target, x[:40], note="test drawings")
    assert made["calibration"] == 40
    assert made["int8_bytes"] < made["float_bytes"] / 3  # int8 weights: a quarter, plus scales
    meta, float_meta = onnx_metadata(target), onnx_metadata(MODELS / "doodles.onnx")
    assert meta["version"] == float_meta["version"] + "-int8"
    assert meta["labels"] == float_meta["labels"]
    assert meta["float_sha256"] == hashlib.sha256((MODELS / "doodles.onnx").read_bytes()).hexdigest()
    assert "7-bit" in meta["quantized"] and "40 test drawings" in meta["quantized"]
    float_probs, int8_probs = onnx_predict(MODELS / "doodles.onnx", x[40:]), onnx_predict(target, x[40:])
    assert int8_probs.shape == float_probs.shape
    np.testing.assert_allclose(int8_probs.sum(axis=1), 1.0, atol=1e-3)
    agree = (int8_probs.argmax(axis=1) == float_probs.argmax(axis=1)).mean()
    assert agree >= 0.97, agree
    # Quantized, not a copy: the answers move a little.
    assert 0 < np.abs(int8_probs - float_probs).max() < 0.5


@pytest.mark.parametrize("name", ["doodles", "numbers", "ocr"])
def test_the_served_model_is_the_int8_file_of_the_committed_float_one(name: str) -> None:
    from config import Settings

    spec = Settings().MODELS[name]
    assert Path(spec.path).name == f"{name}.int8.onnx"
    served, source = ROOT / spec.path, MODELS / f"{name}.onnx"
    # Made from this float file: a retrained model served without quantizing it again fails here.
    assert onnx_metadata(served)["float_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    if name == "ocr":
        _reads_the_committed_lines_as_the_float_file(source, served)
        return
    if name == "doodles":
        x, y = _bitmaps()
    else:
        with np.load(ROOT / "tests" / "data" / "numbers" / "train_sample.npz") as d:
            x = (np.concatenate([d["x_train"], d["x_test"]]).astype(np.float32) / 255)[..., None]
            y = np.concatenate([d["y_train"], d["y_test"]])
    float_probs, int8_probs = onnx_predict(source, x), onnx_predict(served, x)
    float_top1 = (float_probs.argmax(axis=1) == y).mean()
    int8_top1 = (int8_probs.argmax(axis=1) == y).mean()
    # The keep rule's bound is 0.3 points on thousands; on these few hundred, allow two answers.
    assert int8_top1 >= float_top1 - 2 / len(y), (int8_top1, float_top1)
    np.testing.assert_allclose(int8_probs.sum(axis=1), 1.0, atol=1e-5)  # softmax left in float


def _reads_the_committed_lines_as_the_float_file(source: Path, served: Path) -> None:
    import cv2

    from models.ocr import OcrModel

    folder = ROOT / "tests" / "data" / "ocr" / "degraded"
    rows = [r.split("\t", 1) for r in (folder / "labels.tsv").read_text(encoding="utf-8").splitlines() if r]
    rows = [(name, text.split("\\n")) for name, text in rows if not name.startswith("#")]
    exact = {}
    for kind, path in (("float", source), ("int8", served)):
        model = OcrModel("ocr", path)
        read = [
            [line["text"] for line in model(cv2.imread(str(folder / n), cv2.IMREAD_GRAYSCALE))["lines"]]
            for n, _ in rows
        ]
        exact[kind] = sum(got == want for got, (_, want) in zip(read, rows, strict=True))
    assert len(rows) >= 20 and exact["int8"] >= exact["float"] - 1, exact


def test_quantize_refuses_a_missing_float_file(tmp_path: Path) -> None:
    x, _ = _bitmaps()
    with pytest.raises(Exception):  # noqa: B017, PT011 - ONNX Runtime's own error type
        quantize(tmp_path / "missing.onnx", tmp_path / "out.onnx", x[:4], note="none")
    assert not (tmp_path / "out.onnx").exists()


def _figures(passed: bool, error: bool = False) -> dict:
    key = "error" if error else "top1"
    return {
        "made": {
            "settings": "static QDQ",
            "calibration": 4,
            "calibration_note": "test rows",
            "int8_bytes": 1_000_000,
            "float_bytes": 4_000_000,
            "version": "v-int8",
        },
        "sets": {"held-out": {"float": {"n": 10, key: 0.5}, "int8": {"n": 10, key: 0.6}}},
        "rule": "the rule",
        "ms": {"float": 2.0, "int8": 1.0, "calls": 10},
        "max_drop_points": 0.0,
        "passed": passed,
        "command": "python -m training.quantize x",
        "date": "today",
        "name": "x",
        "unit": "thing",
    }


def test_the_int8_section_renders_from_the_figures() -> None:
    from training import cards

    section = cards.environment().get_template("int8.md.j2")
    served = section.render(int8=_figures(True))
    assert "## Served in int8" in served and "| held-out | 10 | 50.00% | 60.00% |" in served
    assert "`x.int8.onnx` from `x.onnx`" in served and "**passed, served**" in served
    refused = section.render(int8=_figures(False, error=True))
    assert (
        "## In int8: measured, not served" in refused
        and "| set | n | mean error / IOD, float | int8 |" in refused
    )
    assert "failed, the float file stays served" in refused


def test_the_keep_rule_counts_lost_accuracy_and_gained_error_as_drops() -> None:
    from training.quantize import _verdict

    accuracy = _figures(True)  # top-1 0.5 -> 0.6: a gain
    _verdict(accuracy, (2.0, 1.0), 10, "cmd")
    assert accuracy["passed"] and accuracy["max_drop_points"] == pytest.approx(-10)
    error = _figures(True, error=True)  # error 0.5 -> 0.6: 10 points worse
    _verdict(error, (2.0, 1.0), 10, "cmd", max_drop=0.1)
    assert not error["passed"] and error["max_drop_points"] == pytest.approx(10)
    slower = _figures(True)
    _verdict(slower, (1.0, 2.0), 10, "cmd")
    assert not slower["passed"]


def test_served_path_names_the_file_each_default_model_is_served_from() -> None:
    from config import served_path

    assert served_path("ocr") == MODELS / "ocr.int8.onnx"
    assert served_path("tracking") == MODELS / "tracking.onnx"  # its int8 file failed the keep rule
    for name in ("numbers", "doodles", "ocr", "tracking"):
        assert served_path(name).is_file()
