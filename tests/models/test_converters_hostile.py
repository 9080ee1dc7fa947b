"""Hostile Teachable Machine exports: each malformed or oversized file is a ModelFileError, fast, without allocating."""

from __future__ import annotations

import contextlib
import json
import shutil
import struct
import time
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pytest

from models.converters import convert_export, convert_keras_h5, convert_tflite_export
from models.runtime import ModelFileError

DATA = Path(__file__).parents[1] / "data" / "teachable"


# --- hostile Keras .h5 files ------------------------------------------------------------------------


def copy_h5(tmp_path: Path) -> Path:
    shutil.copy(DATA / "flask-mug" / "keras_model.h5", tmp_path)
    shutil.copy(DATA / "flask-mug" / "labels.txt", tmp_path)
    return tmp_path / "keras_model.h5"


def edit_h5_config(h5: Path, old: str, new: str) -> None:
    with h5py.File(h5, "r+") as fh:
        text = fh.attrs["model_config"]
        text = text.decode() if isinstance(text, bytes) else text
        assert old in text
        fh.attrs["model_config"] = text.replace(old, new, 1)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            '"class_name": "ReLU"',
            '"class_name": "FancyReLU"',
            "type FancyReLU, which this converter does not handle",
        ),
        (
            '"filters": 16',
            '"filters": 17',
            r"weight kernel has shape \[3, 3, 3, 16\], the layer needs \[3, 3, 3, 17\]",
        ),
        ('"filters": 16', '"filters": 1000000000', "filters must be a whole number"),
        ("[null, 224, 224, 3]", "[null, 100000000, 100000000, 3]", "input height must be a whole number"),
        ('"kernel_size": [3, 3]', '"kernel_size": [3, 3, 3]', "kernel_size must have two values"),
        ('"activation": "softmax"', '"activation": "gelu_new"', "activation 'gelu_new'"),
        ('"padding": "same"', '"padding": "reflect"', "padding 'reflect'"),
        (
            '"inbound_nodes": [[["input_1", 0, 0, {}]]]',
            '"inbound_nodes": [[["nowhere", 0, 0, {}]]]',
            "which no layer gives",
        ),
    ],
    ids=[
        "unknown-layer",
        "wrong-shape",
        "huge-filters",
        "huge-input",
        "bad-kernel",
        "unknown-activation",
        "bad-padding",
        "dangling-input",
    ],
)
def test_hostile_h5_config(tmp_path, old, new, message):
    h5 = copy_h5(tmp_path)
    edit_h5_config(h5, old, new)
    with pytest.raises(ModelFileError, match=message):
        convert_keras_h5(h5)


def test_h5_missing_weight(tmp_path):
    h5 = copy_h5(tmp_path)
    with h5py.File(h5, "r+") as fh:
        group = fh["model_weights/sequential_1"]
        group.attrs["weight_names"] = [n for n in group.attrs["weight_names"] if n != b"Conv1/kernel:0"]
    with pytest.raises(ModelFileError, match="layer Conv1 has no weight kernel"):
        convert_keras_h5(h5)


def test_h5_listed_weight_that_is_not_there(tmp_path):
    h5 = copy_h5(tmp_path)
    with h5py.File(h5, "r+") as fh:
        del fh["model_weights/sequential_1/Conv1/kernel:0"]
    with pytest.raises(ModelFileError, match="Conv1/kernel:0 is listed but missing"):
        convert_keras_h5(h5)


def test_h5_extra_weights_are_refused(tmp_path):
    h5 = copy_h5(tmp_path)
    edit_h5_config(h5, '"use_bias": false', '"use_bias": true')  # Conv1 then wants a bias the file lacks
    with pytest.raises(ModelFileError, match="layer Conv1 has no weight bias"):
        convert_keras_h5(h5)


def test_h5_huge_declared_weight_fails_fast_without_reading_it(tmp_path):
    h5 = copy_h5(tmp_path)
    with h5py.File(h5, "r+") as fh:  # an unwritten chunked dataset: 60 TB declared, a few bytes on disk
        del fh["model_weights/sequential_1/Conv1/kernel:0"]
        fh["model_weights/sequential_1"].create_dataset(
            "Conv1/kernel:0", shape=(10**6, 10**6, 3, 5), dtype="f4", chunks=(1, 1, 3, 5)
        )
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(ModelFileError, match="declares more than"):
        convert_keras_h5(h5)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert time.perf_counter() - start < 2 and peak < 50 * 2**20


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_h5(tmp_path, damage):
    h5 = copy_h5(tmp_path)
    data = h5.read_bytes()
    h5.write_bytes({"garbage": b"not HDF5" * 100, "truncated": data[: len(data) // 3], "empty": b""}[damage])
    with pytest.raises(ModelFileError, match="corrupt"):
        convert_keras_h5(h5)


# --- hostile TensorFlow.js exports ------------------------------------------------------------------


def copy_tfjs(tmp_path: Path) -> Path:
    folder = tmp_path / "tfjs"
    shutil.copytree(DATA / "snackbars-tfjs", folder)
    return folder


def edit_manifest(folder: Path, edit) -> None:
    doc = json.loads((folder / "model.json").read_text())
    edit(doc)
    (folder / "model.json").write_text(json.dumps(doc))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda d: d["weightsManifest"][0]["weights"][0].update(shape=[100000, 100000, 1000]),
            "declares more than",
        ),
        (
            lambda d: d["weightsManifest"][0]["weights"][0].update(shape=[3, 3, 3, 17]),
            "hold 2154432 bytes; model.json declares",
        ),
        (lambda d: d["weightsManifest"][0]["weights"][0].update(shape=[3, -3, 3, 16]), "not a whole number"),
        (
            lambda d: d["weightsManifest"][0].update(paths=["../weights.bin"]),
            "not a file name beside model.json",
        ),
        (
            lambda d: d["weightsManifest"][0].update(paths=["/etc/passwd"]),
            "not a file name beside model.json",
        ),
        (
            lambda d: d["weightsManifest"][0].update(paths=["missing.bin"]),
            "missing.bin named in model.json is missing",
        ),
        (lambda d: d["weightsManifest"][0]["weights"][0].update(dtype="int32"), "dtype 'int32'"),
        (
            lambda d: d["weightsManifest"][0]["weights"][0].update(quantization={"dtype": "int4"}),
            "quantized as 'int4'",
        ),
        (lambda d: d["weightsManifest"][0]["weights"].pop(), "hold 2154432 bytes; model.json declares"),
        (lambda d: d.pop("modelTopology"), "no modelTopology"),
    ],
    ids=[
        "huge-shape",
        "wrong-shape",
        "negative-dim",
        "dotdot-path",
        "absolute-path",
        "missing-file",
        "int-dtype",
        "bad-quantization",
        "missing-weight",
        "graph-model",
    ],
)
def test_hostile_tfjs(tmp_path, edit, message):
    folder = copy_tfjs(tmp_path)
    edit_manifest(folder, edit)
    tracemalloc.start()
    with pytest.raises(ModelFileError, match=message):
        convert_export(folder)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 100 * 2**20


def test_tfjs_unknown_layer_is_named(tmp_path):
    folder = copy_tfjs(tmp_path)
    text = (folder / "model.json").read_text()
    assert '"class_name":"Add"' in text
    (folder / "model.json").write_text(
        text.replace('"class_name":"Add"', '"class_name":"StochasticDepth"', 1)
    )
    with pytest.raises(ModelFileError, match="layer block_2_add has type StochasticDepth"):
        convert_export(folder)


@pytest.mark.parametrize("metadata", ["{}", '{"labels": []}', '{"labels": ["a", 3]}', "not json"])
def test_tfjs_metadata_must_list_labels(tmp_path, metadata):
    folder = copy_tfjs(tmp_path)
    (folder / "metadata.json").write_text(metadata)
    with pytest.raises(ModelFileError, match="metadata.json"):
        convert_export(folder)


def test_tfjs_weights_listed_many_times_are_not_read(tmp_path):
    folder = copy_tfjs(tmp_path)
    edit_manifest(folder, lambda d: d["weightsManifest"][0].update(paths=["weights.bin"] * 1000))
    start = time.perf_counter()
    with pytest.raises(ModelFileError, match="hold 2154432000 bytes; model.json declares 2154432"):
        convert_export(folder)
    assert time.perf_counter() - start < 1


# --- hostile TensorFlow Lite files: the real export, patched in place --------------------------------


def tflite_bytes() -> bytearray:
    return bytearray((DATA / "fruit-tflite" / "model_unquant.tflite").read_bytes())


def write_tflite(tmp_path: Path, data: bytes) -> Path:
    (tmp_path / "labels.txt").write_bytes((DATA / "fruit-tflite" / "labels.txt").read_bytes())
    path = tmp_path / "model_unquant.tflite"
    path.write_bytes(data)
    return path


def subgraph(data: bytearray):
    import tflite

    return tflite.Model.GetRootAsModel(data, 0).Subgraphs(0)


def patch_vector(data: bytearray, table, slot: int, fmt: str, *values: int) -> None:
    """Overwrite the start of a table's vector field (shape, inputs) in place."""
    pos = table._tab.Vector(table._tab.Offset(slot))
    struct.pack_into(fmt, data, pos, *values)


def tensor_named(data: bytearray, name: bytes):
    graph = subgraph(data)
    return next(graph.Tensors(i) for i in range(graph.TensorsLength()) if graph.Tensors(i).Name() == name)


def patch_shape(name: bytes, dims: tuple[int, ...]):
    return lambda data: patch_vector(data, tensor_named(data, name), 4, f"<{len(dims)}i", *dims)


def patch_opcode(data: bytearray) -> None:
    """Turn MEAN into SPACE_TO_DEPTH (an op the converter does not handle)."""
    import tflite

    model = tflite.Model.GetRootAsModel(data, 0)
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        if max(code.BuiltinCode(), code.DeprecatedBuiltinCode()) == tflite.BuiltinOperator.MEAN:
            for slot, fmt in ((4, "<b"), (10, "<i")):  # deprecated_builtin_code (int8), builtin_code
                if code._tab.Offset(slot):
                    struct.pack_into(
                        fmt,
                        data,
                        code._tab.Pos + code._tab.Offset(slot),
                        tflite.BuiltinOperator.SPACE_TO_DEPTH,
                    )


def patch_op_input(data: bytearray) -> None:
    patch_vector(data, subgraph(data).Operators(1), 6, "<i", 10**6)


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        (patch_shape(b"sequential_1_input", (1, 2**30, 2**30, 3)), "declares more than"),
        (patch_shape(b"sequential_1_input", (1, 2000, 2000, 3)), "input height must be a whole number"),
        (
            patch_shape(b"Conv1/kernel", (16, 3, 3, 4)),
            r"its data is 1728 bytes, its shape \[16, 3, 3, 4\] needs 2304",
        ),
        (patch_shape(b"sequential_1/model1/Conv1_pad/Pad", (1, 226, 225, 3)), "declares shape"),
        (patch_opcode, "op SPACE_TO_DEPTH is not handled"),
        (patch_op_input, "refers to tensor 1000000, which does not exist"),
        (lambda data: data.__setitem__(slice(4, 8), b"NOPE"), "not a TensorFlow Lite model"),
    ],
    ids=[
        "huge-input",
        "large-input",
        "wrong-weight-shape",
        "wrong-activation-shape",
        "unknown-op",
        "bad-index",
        "not-tflite",
    ],
)
def test_hostile_tflite(tmp_path, patch, message):
    data = tflite_bytes()
    patch(data)
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(ModelFileError, match=message):
        convert_tflite_export(write_tflite(tmp_path, data))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert time.perf_counter() - start < 2 and peak < 100 * 2**20


@pytest.mark.parametrize("cut", [7, 100, 5000, 1_000_000])
def test_truncated_tflite(tmp_path, cut):
    with pytest.raises(ModelFileError):
        convert_tflite_export(write_tflite(tmp_path, bytes(tflite_bytes()[:cut])))


def test_random_tflite_bytes_are_a_clear_error(tmp_path):
    """Flip bytes where the flatbuffer's tables are (the head and tail): it converts or says why, never crashes."""
    rng = np.random.default_rng(3)
    original = np.frombuffer(tflite_bytes(), np.uint8)
    for _ in range(30):
        data = original.copy()
        spots = np.concatenate([rng.integers(8, 30_000, 20), rng.integers(len(data) - 30_000, len(data), 20)])
        data[spots] = rng.integers(0, 256, size=spots.size, dtype=np.uint8)
        with contextlib.suppress(ModelFileError):
            convert_tflite_export(write_tflite(tmp_path, data.tobytes()))
