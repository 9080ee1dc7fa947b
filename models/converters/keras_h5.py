"""Read a Keras 2 .h5 (Teachable Machine's keras_model.h5) with h5py, without TensorFlow."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import onnx

from models.converters.keras_graph import KerasConverter, WeightStore
from models.converters.limits import MAX_CONFIG_BYTES, MAX_LAYERS
from models.runtime import ModelFileError


def text(value: Any) -> str:
    """Decode an HDF5 string attribute."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def read_weights(group: Any, store: WeightStore) -> None:
    """Register every weight of model_weights, by the names Keras lists, without reading any data yet."""
    layer_names = group.attrs.get("layer_names", [])
    if len(layer_names) > MAX_LAYERS:
        raise ModelFileError(f"{store.source}: the file lists {len(layer_names)} weight groups")
    for top in layer_names:
        sub = group.get(text(top))
        if sub is None:
            raise ModelFileError(f"{store.source}: the weight group {text(top)} is listed but missing")
        for full in sub.attrs.get("weight_names", []):
            full = text(full)
            data = sub.get(full)
            if data is None or not hasattr(data, "shape"):
                raise ModelFileError(f"{store.source}: the weight {full} is listed but missing")
            if data.dtype.kind != "f":
                raise ModelFileError(f"{store.source}: the weight {full} is {data.dtype}, not floating point")
            # Bind the dataset now; h5py reads its values only when a layer takes it.
            store.add(full, tuple(data.shape), lambda d=data: d[()])


def convert_h5(path: Path, metadata: dict[str, str]) -> tuple[onnx.ModelProto, dict]:
    """Convert a Keras 2 .h5 to an ONNX ModelProto; return it with facts about the model."""
    import h5py

    path = Path(path)
    source = path.name
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    try:
        with h5py.File(path, "r") as fh:
            raw = fh.attrs.get("model_config")
            if raw is None or "model_weights" not in fh:
                raise ModelFileError(
                    f"{source}: not a full Keras model file (no model_config or model_weights)"
                )
            if len(raw) > MAX_CONFIG_BYTES:
                raise ModelFileError(f"{source}: the model config is over {MAX_CONFIG_BYTES >> 20} MiB")
            config = json.loads(text(raw))
            keras_version = text(fh.attrs.get("keras_version", "unknown"))
            store = WeightStore(source)
            read_weights(fh["model_weights"], store)
            model, facts = KerasConverter(store, source, keras_version).convert(
                config, {**metadata, "keras_source_version": keras_version}
            )
    except ModelFileError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise ModelFileError(
            f"{source}: cannot read the Keras .h5 file (corrupt or not HDF5): {exc}"
        ) from None
    return model, {**facts, "keras_source_version": keras_version}
