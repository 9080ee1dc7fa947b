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


@pytest.mark.parametrize("name", ["doodles", "numbers"])
def test_the_served_model_is_the_int8_file_of_the_committed_float_one(name: str) -> None:
    from config import Settings

    spec = Settings().MODELS[name]
    assert Path(spec.path).name == f"{name}.int8.onnx"
    served, source = ROOT / spec.path, MODELS / f"{name}.onnx"
    # Made from this float file: a retrained model served without quantizing it again fails here.
    assert onnx_metadata(served)["float_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
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


def test_quantize_refuses_a_missing_float_file(tmp_path: Path) -> None:
    x, _ = _bitmaps()
    with pytest.raises(Exception):  # noqa: B017, PT011 - ONNX Runtime's own error type
        quantize(tmp_path / "missing.onnx", tmp_path / "out.onnx", x[:4], note="none")
    assert not (tmp_path / "out.onnx").exists()
