"""Read a TensorFlow.js layers export (model.json + weights.bin + metadata.json) without TensorFlow."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from models.converters.keras_graph import KerasConverter, WeightStore
from models.converters.limits import MAX_CONFIG_BYTES, MAX_LAYERS, MAX_WEIGHT_BYTES, check_shape
from models.runtime import ModelFileError

# Bytes per stored value: plain float32, or the quantized forms tensorflowjs_converter writes
# (uint8/uint16 as q * scale + min, float16 as is).
STORED_DTYPES = {
    "float32": np.dtype("<f4"),
    "uint8": np.dtype("u1"),
    "uint16": np.dtype("<u2"),
    "float16": np.dtype("<f2"),
}
MAX_LABELS = 1000


def read_json(path: Path, what: str) -> Any:
    """Read a small JSON file, refusing large or malformed ones."""
    try:
        size = path.stat().st_size
    except OSError:
        raise ModelFileError(f"{what} not found: {path.name}") from None
    if size > MAX_CONFIG_BYTES:
        raise ModelFileError(f"{path.name} is {size} bytes, over the {MAX_CONFIG_BYTES >> 20} MiB allowed")
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ModelFileError(f"{path.name} is not valid JSON: {exc}") from None


def read_labels(path: Path) -> list[str]:
    """Read the class names from a Teachable Machine metadata.json."""
    meta = read_json(path, "metadata.json")
    labels = meta.get("labels") if isinstance(meta, dict) else None
    if (
        not isinstance(labels, list)
        or not 0 < len(labels) <= MAX_LABELS
        or not all(isinstance(label, str) and label.strip() for label in labels)
    ):
        raise ModelFileError(f"{path.name}: 'labels' must list 1 to {MAX_LABELS} non-empty names")
    return [label.strip() for label in labels]


def shard(folder: Path, name: Any) -> tuple[Path, int]:
    """Return a weights file named by the manifest, and its size; it must sit beside model.json."""
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        raise ModelFileError(f"model.json: the weights path {name!r} is not a file name beside model.json")
    path = folder / name
    try:
        return path, path.stat().st_size
    except OSError:
        raise ModelFileError(f"the weights file {name} named in model.json is missing") from None


def stored_dtype(entry: dict, what: str) -> tuple[np.dtype, dict | None]:
    """Return how a manifest entry's values are stored, and its quantization (or None)."""
    if entry.get("dtype") != "float32":
        raise ModelFileError(f"{what} has dtype {entry.get('dtype')!r}; a layers model's weights are float32")
    quant = entry.get("quantization")
    if quant is None:
        return STORED_DTYPES["float32"], None
    kind = quant.get("dtype") if isinstance(quant, dict) else None
    if kind not in ("uint8", "uint16", "float16"):
        raise ModelFileError(f"{what} is quantized as {kind!r}; uint8, uint16 and float16 are handled")
    if kind != "float16":
        for key in ("scale", "min"):
            value = quant.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
                raise ModelFileError(f"{what}: quantization {key} must be a finite number")
    return STORED_DTYPES[kind], quant


def register_weights(manifest: Any, folder: Path, store: WeightStore) -> None:
    """Check the manifest against the weights files and register every weight for lazy reading."""
    if not isinstance(manifest, list) or not manifest:
        raise ModelFileError("model.json has no weightsManifest")
    declared = 0
    for group in manifest:
        entries = group.get("weights") if isinstance(group, dict) else None
        paths = group.get("paths") if isinstance(group, dict) else None
        if not isinstance(entries, list) or not isinstance(paths, list) or len(entries) > 4 * MAX_LAYERS:
            raise ModelFileError("model.json: a weightsManifest group needs 'paths' and 'weights' lists")
        layout = []
        offset = 0
        for entry in entries:
            what = f"model.json weight {entry.get('name') if isinstance(entry, dict) else entry!r}"
            if not isinstance(entry, dict):
                raise ModelFileError(f"{what} is not an object")
            dims = check_shape(entry.get("shape"), what, limit=MAX_WEIGHT_BYTES // 4)
            dtype, quant = stored_dtype(entry, what)
            nbytes = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
            declared += nbytes
            if declared > MAX_WEIGHT_BYTES:
                raise ModelFileError(f"model.json declares over {MAX_WEIGHT_BYTES >> 20} MiB of weights")
            layout.append((entry.get("name"), dims, dtype, quant, offset))
            offset += nbytes
        # Shapes and sizes are all known: only now read the files, once, and check they agree.
        if len(paths) > 1000:
            raise ModelFileError(f"model.json lists {len(paths)} weights files")
        files = [shard(folder, name) for name in paths]
        size = sum(n for _, n in files)
        if size != offset:  # checked before reading: a path listed many times is not read many times
            raise ModelFileError(f"the weights files {paths} hold {size} bytes; model.json declares {offset}")
        try:
            data = b"".join(path.read_bytes() for path, _ in files)
        except OSError as exc:
            raise ModelFileError(f"cannot read the weights files {paths}: {exc}") from None
        if len(data) != offset:
            raise ModelFileError(f"the weights files {paths} changed while being read")
        for name, dims, dtype, quant, start in layout:
            store.add(name, dims, lambda d=data, s=start, t=dtype, n=dims, q=quant: values(d, s, t, n, q))


def values(
    data: bytes, start: int, dtype: np.dtype, shape: tuple[int, ...], quant: dict | None
) -> np.ndarray:
    """Decode one weight from the concatenated weights files."""
    count = int(np.prod(shape, dtype=np.int64))
    stored = np.frombuffer(data, dtype=dtype, count=count, offset=start).reshape(shape)
    if quant is None or dtype == STORED_DTYPES["float16"]:
        return stored.astype(np.float32)
    return (stored.astype(np.float32) * np.float32(quant["scale"]) + np.float32(quant["min"])).astype(
        np.float32
    )


def convert_tfjs(model_json: Path, metadata: dict[str, str]) -> tuple[onnx.ModelProto, dict]:
    """Convert a TensorFlow.js layers model to an ONNX ModelProto; return it with facts about the model."""
    model_json = Path(model_json)
    doc = read_json(model_json, "model.json")
    topology = doc.get("modelTopology") if isinstance(doc, dict) else None
    if not isinstance(topology, dict):
        raise ModelFileError("model.json has no modelTopology (a TensorFlow.js graph model is not handled)")
    config = topology.get("model_config", topology)  # tensorflowjs_converter nests it; tfjs-layers does not
    store = WeightStore(model_json.name)
    register_weights(doc.get("weightsManifest"), model_json.parent, store)
    keras_version = str(topology.get("keras_version", "unknown"))
    model, facts = KerasConverter(store, model_json.name).convert(
        config, {**metadata, "keras_source_version": keras_version}
    )
    return model, {**facts, "keras_source_version": keras_version}
