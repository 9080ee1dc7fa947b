"""The Teachable Machine classifier: labels parsing, the ONNX cache, errors, and the reference output."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from models.registry import build_registry
from models.runtime import LabelMismatchError, ModelFileError, ModelInputError
from models.teachable import (
    CACHE_FORMAT,
    TeachableModel,
    cache_is_fresh,
    cache_paths,
    parse_labels,
    teachable_input,
)

DATA = Path(__file__).parents[1] / "data" / "teachable"
FIXTURE = DATA / "flask-mug"
ROOT = Path(__file__).parents[2]
# From the export's README: Keras 2 (Teachable Machine) output on the reference drawing.
REFERENCE = {"Flask": 0.0128, "Mug": 0.9872}


def reference_drawing() -> np.ndarray:
    """A white 256x256 image with a black circle outline, 12 px wide, at (40, 40, 216, 216)."""
    img = Image.new("RGB", (256, 256), "white")
    ImageDraw.Draw(img).ellipse((40, 40, 216, 216), outline="black", width=12)
    return np.asarray(img)


def copy_export(dest: Path, *, cache: bool = True) -> Path:
    """Copy the fixture export (optionally without its ONNX cache) and return the .h5 path."""
    dest.mkdir(parents=True, exist_ok=True)
    names = ["keras_model.h5", "labels.txt"] + (
        ["keras_model.onnx", "keras_model.onnx.json"] if cache else []
    )
    for name in names:
        shutil.copyfile(FIXTURE / name, dest / name)
    return dest / "keras_model.h5"


@pytest.fixture(scope="module")
def model() -> TeachableModel:
    return TeachableModel("flask-mug", FIXTURE / "keras_model.h5", labels=FIXTURE / "labels.txt")


# --- labels.txt -----------------------------------------------------------------------------------


def write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "labels.txt"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"0 Flask\n1 Mug\n", ["Flask", "Mug"]),
        (b"0 Flask\n1 Mug", ["Flask", "Mug"]),
        (b"0 Coffee mug\n1 Water  bottle \n\n\n", ["Coffee mug", "Water  bottle"]),
        ("0 Кружка\n1 茶杯\n2 Café crème\n".encode(), ["Кружка", "茶杯", "Café crème"]),
        ("\ufeff0 Flask\r\n1 Mug\r\n".encode(), ["Flask", "Mug"]),
        (b"1 Mug\n0 Flask\n", ["Flask", "Mug"]),
        (b"0 0\n1 1\n", ["0", "1"]),
        (b"cat\ndog house\n", ["cat", "dog house"]),
        ("\u00b2 squared\n3D printer\n".encode(), ["\u00b2 squared", "3D printer"]),
    ],
    ids=[
        "plain",
        "no-final-newline",
        "spaces-blank-lines",
        "utf8",
        "bom-crlf",
        "unordered",
        "digit-names",
        "no-index",
        "unicode-digit",
    ],
)
def test_parse_labels(tmp_path, data, expected):
    assert parse_labels(write(tmp_path, data)) == expected


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "has no labels"),
        (b"\n \n", "has no labels"),
        (b"0 Flask\n0 Mug\n", "appears twice"),
        (b"0 Flask\n2 Mug\n", "indexes must run from 0 to 1"),
        (b"0 Flask\n1\n", "has no name"),
        (b"0 Flask\nMug\n", "line 2"),
        (b"0 Fl\xe4sk\n", "UTF-8"),
    ],
    ids=["empty", "blank", "duplicate", "gap", "no-name", "mixed", "latin1"],
)
def test_parse_labels_rejects(tmp_path, data, message):
    with pytest.raises(ModelFileError, match=message):
        parse_labels(write(tmp_path, data))


def test_missing_labels_file(tmp_path):
    with pytest.raises(ModelFileError, match="labels file not found"):
        parse_labels(tmp_path / "labels.txt")


# --- serving from the committed ONNX cache (no TensorFlow) ----------------------------------------


def test_committed_caches_are_fresh():
    assert cache_is_fresh(FIXTURE / "keras_model.h5")
    assert cache_is_fresh(ROOT / "models" / "classifiers" / "flask-mug" / "keras_model.h5")


def test_reference_probabilities_from_onnx_cache(model):
    result = model(reference_drawing(), top=2)
    got = {row["label"]: row["confidence"] for row in result["top"]}
    assert got == pytest.approx(REFERENCE, abs=1e-3)
    assert result["label"] == "Mug"
    assert result["confidence"] == got["Mug"]


def test_serving_fresh_cache_does_not_import_tensorflow():
    code = (
        "import sys; from models.teachable import TeachableModel as T; "
        f"m = T('m', {str(FIXTURE / 'keras_model.h5')!r}, labels={str(FIXTURE / 'labels.txt')!r}); "
        "m.warmup(); print('tensorflow' in sys.modules, 'keras' in sys.modules, 'h5py' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False", "False"]


def test_serves_an_onnx_path_directly():
    direct = TeachableModel("direct", FIXTURE / "keras_model.onnx", labels=FIXTURE / "labels.txt")
    assert direct(reference_drawing())["label"] == "Mug"
    assert direct.labels == ["Flask", "Mug"]


def test_labels_default_to_the_export_folder(model):
    assert TeachableModel("m", FIXTURE / "keras_model.h5").labels == model.labels


def test_describe(model):
    info = model.describe()
    assert info["kind"] == "teachable"
    assert info["labels"] == ["Flask", "Mug"]
    assert info["source"].endswith("keras_model.h5")
    assert info["file"].endswith("keras_model.onnx")


def test_preprocess_matches_teachable_machine_snippet(model):
    rng = np.random.default_rng(1)
    photo = rng.integers(0, 256, size=(300, 420, 3), dtype=np.uint8)
    fitted = ImageOps.fit(Image.fromarray(photo), (224, 224), Image.Resampling.LANCZOS)
    expected = (np.asarray(fitted).astype(np.float32) / 127.5) - 1
    x, _ = model.preprocess(photo)
    assert x.shape == (1, 224, 224, 3) and x.dtype == np.float32
    np.testing.assert_array_equal(x[0], expected)
    assert model.preprocess(np.full((10, 10, 3), 255, np.uint8))[0].min() == 1.0


def test_preprocess_accepts_gray_and_rejects_other_shapes(model):
    assert model.preprocess(np.zeros((50, 80), np.uint8))[0].shape == (1, 224, 224, 3)
    with pytest.raises(ModelInputError):
        model.preprocess(np.zeros((5, 5, 4), np.uint8))


@pytest.mark.parametrize(("top", "count"), [(1, 1), (2, 2), (10, 2), (0, 1)])
def test_top_is_clamped_to_the_labels(model, top, count):
    result = model(reference_drawing(), top=top)
    assert len(result["top"]) == count
    assert sum(r["confidence"] for r in model(reference_drawing(), top=2)["top"]) == pytest.approx(
        1, abs=1e-5
    )


# --- errors ---------------------------------------------------------------------------------------


def test_label_count_mismatch_names_both_files(tmp_path):
    h5 = copy_export(tmp_path / "mug")
    (h5.parent / "labels.txt").write_text("0 Flask\n1 Mug\n2 Bottle\n", encoding="utf-8")
    with pytest.raises(LabelMismatchError) as info:
        TeachableModel("mug", h5, labels=h5.parent / "labels.txt")
    message = str(info.value)
    assert str(h5) in message and str(h5.parent / "labels.txt") in message
    assert "3 labels" in message and "2 outputs" in message
    assert isinstance(info.value, ModelFileError) and info.value.fatal


def test_stale_cache_is_detected(tmp_path):
    h5 = copy_export(tmp_path / "mug")
    assert cache_is_fresh(h5)
    _, stamp = cache_paths(h5)
    data = json.loads(stamp.read_text())
    stamp.write_text(json.dumps({**data, "source_sha256": "0" * 64}))
    assert not cache_is_fresh(h5)
    stamp.write_text(json.dumps(data))
    with open(h5, "ab") as fh:  # the .h5 changed after conversion
        fh.write(b"\0")
    assert not cache_is_fresh(h5)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_h5_is_a_clear_error(tmp_path, damage):
    pytest.importorskip("h5py")
    h5 = copy_export(tmp_path / "bad", cache=False)
    data = h5.read_bytes()
    h5.write_bytes(b"this is not HDF5" * 100 if damage == "garbage" else data[: len(data) // 3])
    with pytest.raises(ModelFileError, match="corrupt"):
        TeachableModel("bad", h5, labels=h5.parent / "labels.txt")
    assert not cache_paths(h5)[0].exists()


def test_a_corrupt_export_does_not_stop_the_others(tmp_path):
    pytest.importorskip("h5py")
    good = copy_export(tmp_path / "good")
    bad = copy_export(tmp_path / "bad", cache=False)
    bad.write_bytes(b"\x89HDF broken")
    specs = {
        name: {"type": "teachable", "path": str(h5), "labels": str(h5.parent / "labels.txt")}
        for name, h5 in (("bad", bad), ("good", good))
    }
    registry = build_registry(specs, root=tmp_path)
    assert list(registry.models) == ["good"]
    assert "ModelFileError" in registry.failures["bad"] and "corrupt" in registry.failures["bad"]


# --- the conversion itself (TensorFlow) -----------------------------------------------------------


@pytest.mark.tensorflow
@pytest.mark.slow
def test_conversion_matches_keras2_reference(tmp_path):
    """The Keras-based converter (training/teachable_convert.py) stays only as this reference."""
    pytest.importorskip("tensorflow")
    from training.teachable_convert import build_keras_model, read_teachable

    h5 = copy_export(tmp_path / "mug", cache=False)
    keras_model = build_keras_model(read_teachable(h5))
    x = teachable_input(reference_drawing())
    probs = np.asarray(keras_model(x, training=False))[0]
    assert dict(zip(["Flask", "Mug"], probs.tolist(), strict=True)) == pytest.approx(REFERENCE, abs=1e-3)

    served = TeachableModel("mug", h5, labels=h5.parent / "labels.txt")  # converts: no cache yet
    assert cache_is_fresh(h5)
    stamp = json.loads(cache_paths(h5)[1].read_text())
    assert stamp["format"] == CACHE_FORMAT and stamp["source_format"] == "keras_h5"
    assert stamp["conversion"]["classes"] == 2
    served_probs = [
        r["confidence"] for r in sorted(served(reference_drawing(), top=2)["top"], key=lambda r: r["label"])
    ]
    np.testing.assert_allclose(served_probs, probs, atol=1e-4)


# --- conversion without TensorFlow, every export format -----------------------------------------


# Imports of these fail in the subprocess, as they would in a `make run` install.
BLOCKER = """
import importlib.abc, sys
class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"tensorflow", "keras", "tf_keras", "tf2onnx", "training", "bench"}:
            raise ImportError(f"{name} is blocked: serving must not import it")
sys.meta_path.insert(0, Blocked())
"""


def copy_folder(name: str, dest: Path, files: list[str] | None = None) -> Path:
    """Copy a committed export (only `files` when given, never its ONNX cache) into dest/name."""
    source = DATA / name
    folder = dest / name
    folder.mkdir(parents=True)
    for path in source.iterdir():
        cache = path.suffix == ".onnx" or path.name.endswith(".onnx.json")
        if not cache and (files is None or path.name in files):
            shutil.copyfile(path, folder / path.name)
    return folder


def test_h5_converts_without_tensorflow(tmp_path):
    h5 = copy_export(tmp_path / "mug", cache=False)
    code = BLOCKER + (
        "from models.teachable import TeachableModel, cache_is_fresh\n"
        f"m = TeachableModel('m', {str(h5)!r})\n"
        f"print(m.source_format, cache_is_fresh({str(h5)!r}), m(__import__('numpy').zeros((9, 9, 3), 'uint8'))['label'])\n"
        "print(sorted(n for n in sys.modules if n.split('.')[0] in ('tensorflow', 'keras', 'training')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.splitlines()
    assert first.split()[:2] == ["keras_h5", "True"] and second == "[]"
    stamp = json.loads(cache_paths(h5)[1].read_text())
    assert stamp["format"] == CACHE_FORMAT and stamp["source_sha256"] and stamp["converted_s"] < 3
    # The same outputs as the committed cache, which the Keras-based converter wrote.
    theirs = TeachableModel("theirs", FIXTURE / "keras_model.onnx", labels=FIXTURE / "labels.txt")
    ours = TeachableModel("ours", h5)
    x = np.random.default_rng(0).uniform(-1, 1, size=(2, 224, 224, 3)).astype(np.float32)
    np.testing.assert_allclose(ours.predict(x), theirs.predict(x), atol=1e-5)


@pytest.mark.parametrize(
    ("folder", "files", "source", "fmt", "labels"),
    [
        ("snackbars-tfjs", None, "model.json", "tfjs", ["Snickers", "Mars", "Rood"]),
        ("fruit-tflite", ["model_unquant.tflite", "labels.txt"], "model_unquant.tflite", "tflite", None),
        ("fruit-tflite", ["model.tflite", "labels.txt"], "model.tflite", "tflite_quantized", None),
    ],
    ids=["tfjs", "tflite", "tflite-quantized"],
)
def test_every_format_is_served_from_its_folder(tmp_path, folder, files, source, fmt, labels):
    export = copy_folder(folder, tmp_path, files)
    model = TeachableModel("m", export)
    assert model.source == export / source and model.source_format == fmt
    assert model.path == export / (Path(source).stem + ".onnx") and cache_is_fresh(model.source)
    assert len(model.labels) == model.output_count()
    if labels:
        assert model.labels == labels and model.labels_path.name == "metadata.json"
    assert model.describe()["format"] == fmt
    result = model(np.full((64, 64, 3), 200, np.uint8), top=10)
    assert sum(r["confidence"] for r in result["top"]) == pytest.approx(1, abs=1e-3)
    again = TeachableModel("m", export / source)  # from the fresh cache: the same answer
    assert again(np.full((64, 64, 3), 200, np.uint8), top=10) == result


def test_a_tfjs_cache_goes_stale_when_its_weights_change(tmp_path):
    export = copy_folder("snackbars-tfjs", tmp_path)
    TeachableModel("m", export)
    assert cache_is_fresh(export / "model.json")
    data = bytearray((export / "weights.bin").read_bytes())
    data[100] ^= 1
    (export / "weights.bin").write_bytes(bytes(data))
    assert not cache_is_fresh(export / "model.json")
    (export / "weights.bin").unlink()
    assert not cache_is_fresh(export / "model.json")
    with pytest.raises(ModelFileError, match="weights file weights.bin"):
        TeachableModel("m", export)


def test_labels_that_do_not_fit_stop_the_conversion(tmp_path):
    export = copy_folder("fruit-tflite", tmp_path, ["model.tflite", "labels.txt"])
    (export / "labels.txt").write_text("0 apple\n1 pear\n", encoding="utf-8")
    with pytest.raises(LabelMismatchError, match="2 classes but the model has 6 outputs"):
        TeachableModel("m", export)
    assert not cache_paths(export / "model.tflite")[0].exists()


def test_a_folder_with_two_exports_is_a_clear_error(tmp_path):
    export = copy_folder("fruit-tflite", tmp_path)
    shutil.copyfile(FIXTURE / "keras_model.h5", export / "keras_model.h5")
    with pytest.raises(ModelFileError, match="more than one export"):
        TeachableModel("m", export)


def test_the_readme_figures_script_runs_and_agrees(capsys):
    """`python -m bench.teachable` (the README's table) measures every committed export in each format."""
    from bench import teachable as bench_teachable

    assert bench_teachable.main(["--repeat", "1", "--json"]) == 0
    rows = {row["export"]: row for row in json.loads(capsys.readouterr().out)["rows"]}
    formats = {rows[key]["format"] for key in rows}
    assert formats == {"keras_h5", "tfjs", "tflite", "tflite_quantized"}
    for key, row in rows.items():
        assert row["max_abs_diff"] <= (0.1 if row["format"] == "tflite_quantized" else 1e-4), key
        assert row["same_best_label"] == row["images"] and row["convert_s"] < 3, key
