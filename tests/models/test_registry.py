"""The registry of model classes: adding a classifier is one module plus one line in MODEL_TYPES."""

from __future__ import annotations

import ast
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


# --- serving imports nothing from training/ or bench/ ---------------------------------------------

SERVING = ["app.py", "config.py", "blueprints", "models", "store"]


def imported_modules(path: Path) -> set[str]:
    """Return every module a Python file imports, at any depth of its code (inside functions too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
            "import_module",
            "__import__",
        ):
            found.update(
                a.value for a in node.args[:1] if isinstance(a, ast.Constant) and isinstance(a.value, str)
            )
    return found


def test_serving_imports_nothing_from_training_or_bench():
    files = [
        p
        for entry in SERVING
        for p in ([ROOT / entry] if entry.endswith(".py") else (ROOT / entry).rglob("*.py"))
    ]
    assert len(files) > 30
    bad = {
        str(path.relative_to(ROOT)): sorted(
            m for m in imported_modules(path) if m.split(".")[0] in ("training", "bench")
        )
        for path in files
    }
    assert {k: v for k, v in bad.items() if v} == {}
    # ...and MODEL_TYPES, imported by name, names serving modules only.
    assert all(target.split(".")[0] == "models" for target in registry.MODEL_TYPES.values())


# --- classifier folders: every export format, and models added while serving ---------------------

TEACHABLE = ROOT / "tests" / "data" / "teachable"


def export_copy(dest: Path, name: str, files: tuple[str, ...], source: str | None = None) -> Path:
    """Copy some files of a committed Teachable Machine export (source, else name) into dest/name."""
    (dest / name).mkdir(parents=True)
    for file in files:
        shutil.copyfile(TEACHABLE / (source or name) / file, dest / name / file)
    return dest / name


def test_discovery_finds_every_export_format(tmp_path):
    export_copy(
        tmp_path, "flask-mug", ("keras_model.h5", "keras_model.onnx", "keras_model.onnx.json", "labels.txt")
    )
    export_copy(tmp_path, "snackbars-tfjs", ("model.json", "weights.bin", "metadata.json"))
    export_copy(tmp_path, "fruit-tflite", ("model_unquant.tflite", "model.tflite", "labels.txt"))
    both = export_copy(tmp_path, "both", ())
    for source in (TEACHABLE / "fruit-tflite" / "model.tflite", TEACHABLE / "flask-mug" / "keras_model.h5"):
        shutil.copyfile(source, both / source.name)
    export_copy(tmp_path, ".upload-123", ("model.json",), "snackbars-tfjs")  # an unfinished upload
    export_copy(tmp_path, "notes", ())
    found = registry.discover_classifiers(tmp_path)
    assert {name: Path(spec["path"]).name for name, spec in found.items()} == {
        "both": "both",
        "flask-mug": "keras_model.h5",
        "fruit-tflite": "model_unquant.tflite",  # the float model, when both are there
        "snackbars-tfjs": "model.json",
    }
    assert Path(found["snackbars-tfjs"]["labels"]).name == "metadata.json"
    built = registry.build_registry(found, root=tmp_path)
    assert sorted(built.models) == ["flask-mug", "fruit-tflite", "snackbars-tfjs"]
    assert "more than one export" in built.failures["both"]


def test_a_rebuild_keeps_unchanged_models_and_loads_changed_ones(tmp_path, fresh_registries):
    export_copy(tmp_path, "snackbars-tfjs", ("model.json", "weights.bin", "metadata.json"))
    old = registry.build_registry(registry.discover_classifiers(tmp_path), root=tmp_path)
    export_copy(tmp_path, "fruit-tflite", ("model.tflite", "labels.txt"))
    new = registry.rebuild(old, registry.discover_classifiers(tmp_path), root=tmp_path, threads=1)
    assert new.models["snackbars-tfjs"] is old.models["snackbars-tfjs"]
    assert new.models["fruit-tflite"].source_format == "tflite_quantized" and new.ready
    # Removed and added again under the same name: a new file, so a new model.
    shutil.rmtree(tmp_path / "snackbars-tfjs")
    export_copy(tmp_path, "snackbars-tfjs", ("model.json", "weights.bin", "metadata.json"))
    again = registry.rebuild(new, registry.discover_classifiers(tmp_path), root=tmp_path, threads=1)
    assert again.models["snackbars-tfjs"] is not old.models["snackbars-tfjs"]
    assert again.models["fruit-tflite"] is new.models["fruit-tflite"]
    shutil.rmtree(tmp_path / "fruit-tflite")
    last = registry.rebuild(again, registry.discover_classifiers(tmp_path), root=tmp_path, threads=1)
    assert list(last.models) == ["snackbars-tfjs"] and list(last.specs) == ["snackbars-tfjs"]


def test_refresh_swaps_the_registry_only_when_a_folder_is_marked_changed(base_app_config, tmp_path):
    app = create_app({**base_app_config, "CLASSIFIER_DIRS": [str(tmp_path)]})
    first = app.extensions["registry"]
    assert registry.refresh(app) is first  # nothing changed: one stat, the same registry
    export_copy(tmp_path, "snackbars-tfjs", ("model.json", "weights.bin", "metadata.json"))
    assert registry.refresh(app) is first  # a folder dropped in is served after a restart or a mark
    registry.mark_changed(tmp_path)
    second = registry.refresh(app)
    assert second is not first and app.extensions["registry"] is second
    assert "snackbars-tfjs" in second.models and second.models["doodles"] is first.models["doodles"]
    assert registry.refresh(app) is second
    assert first.models.keys() == second.models.keys() - {"snackbars-tfjs"}  # the old one is untouched
