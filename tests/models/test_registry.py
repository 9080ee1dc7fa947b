"""The registry of model classes: adding a classifier is one module plus one line in MODEL_TYPES."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from app import create_app
from models import registry
from models.classifier import Classifier
from models.numbers import NumbersModel
from models.runtime import LabelMismatchError
from tests.conftest import data_url, png_bytes

ROOT = Path(__file__).resolve().parents[2]
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


# --- the module a new classifier needs: this class (its labels file lies beside its model) ---------


class DigitWords(Classifier):
    """Name a drawn digit in words: the digit model's ONNX file behind a classifier."""

    kind = "digit_words"
    input_mode = "gray"
    made_for = "drawings"
    decimals = 2

    def preprocess(self, pixels: np.ndarray, **options: Any) -> tuple[np.ndarray, None]:
        """Scale a white-on-black gray digit to the 28x28 input."""
        small = cv2.resize(pixels, (28, 28), interpolation=cv2.INTER_AREA)
        return (small.astype(np.float32) / 255)[None, :, :, None], None


def seven() -> np.ndarray:
    """A white 7 on black, MNIST-like."""
    canvas = np.zeros((28, 28), np.uint8)
    cv2.line(canvas, (8, 7), (20, 7), 255, 3)
    cv2.line(canvas, (20, 7), (12, 22), 255, 3)
    return canvas


@pytest.fixture
def export(tmp_path: Path) -> Path:
    """A model file and, beside it, its labels file as DigitWords names it by default."""
    model = tmp_path / "words.onnx"
    shutil.copyfile(ROOT / "models" / "numbers.onnx", model)
    (tmp_path / "words_labels.txt").write_text("\n".join(WORDS) + "\n", encoding="utf-8")
    return model


@pytest.fixture
def words_app(base_app_config, export, monkeypatch):
    # ...and the one line: its type in the registry's list of model classes.
    monkeypatch.setitem(registry.MODEL_TYPES, "digit_words", f"{__name__}:DigitWords")
    config = {
        **base_app_config,
        "MODELS": {
            "words": {"type": "digit_words", "path": str(export)},
            "numbers": {"type": "numbers", "path": "models/numbers.onnx"},
        },
        "CLASSIFIER_DIRS": [],
        "DEFAULT_CLASSIFIER": "words",
    }
    return create_app(config)


def test_a_new_classifier_is_served_at_the_classifier_routes(words_app):
    client = words_app.test_client()
    image = {"image": data_url(png_bytes(seven())), "top": 2}
    for url in ("/api/classifier/words", "/api/classifier"):
        r = client.post(url, json=image)
        body = r.get_json()
        assert r.status_code == 200, body
        assert body["model"] == "words" and body["label"] == "seven"
        assert [row["label"] for row in body["top"]][0] == "seven" and len(body["top"]) == 2
        assert body["confidence"] == round(body["confidence"], 2)  # its own rounding rule


def test_a_new_classifier_is_listed_and_offered_on_the_drawing_page(words_app):
    client = words_app.test_client()
    rows = {m["name"]: m for m in client.get("/api/classifier/models").get_json()["models"]}
    assert set(rows) == {"words"}  # the digit model is no Classifier
    assert rows["words"]["kind"] == "digit_words" and rows["words"]["labels"] == WORDS
    assert rows["words"]["input_mode"] == "gray" and rows["words"]["loaded"] is True
    page = client.get("/doodle").get_data(as_text=True)
    assert "seven" in page


def test_the_registry_knows_classifiers_by_class(words_app):
    reg = words_app.extensions["registry"]
    assert reg.classes == {"words": DigitWords, "numbers": NumbersModel}
    assert list(reg.by_class(Classifier)) == ["words"]
    assert isinstance(reg.get("words"), Classifier)


def test_labels_that_do_not_fit_stop_the_start(base_app_config, export, monkeypatch):
    monkeypatch.setitem(registry.MODEL_TYPES, "digit_words", f"{__name__}:DigitWords")
    labels = export.with_name("nine.txt")
    labels.write_text("\n".join(WORDS[:9]), encoding="utf-8")
    spec = {"type": "digit_words", "path": str(export), "labels": str(labels)}
    with pytest.raises(LabelMismatchError, match="9 labels but model .* has 10 outputs"):
        create_app({**base_app_config, "MODELS": {"words": spec}, "CLASSIFIER_DIRS": []})


def test_side_files_resolve_against_the_root(tmp_path, export, fresh_registries):
    (tmp_path / "names.txt").write_text("\n".join(WORDS), encoding="utf-8")
    spec = {"type": "doodle", "path": "words.onnx", "labels": "names.txt"}
    built = registry.build_registry({"w": spec}, root=tmp_path)
    assert built.failures == {} and built.models["w"].labels_path == tmp_path / "names.txt"


def test_an_unknown_type_is_a_load_failure_not_a_classifier(tmp_path, fresh_registries):
    built = registry.build_registry({"x": {"type": "nope", "path": "x.onnx"}}, root=tmp_path)
    assert "unknown model type 'nope'" in built.failures["x"]
    assert built.by_class(Classifier) == {} and built.classes == {}


def test_every_model_declares_its_input_mode():
    for type_name in registry.MODEL_TYPES:
        assert registry.model_class(type_name).input_mode in ("gray", "rgb", "bgr"), type_name
