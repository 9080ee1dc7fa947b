"""Rebuild a Teachable Machine export (Keras 2 keras_model.h5) in Keras 3, without tf-keras.

Keras 3 cannot load these files itself: it rejects DepthwiseConv2D's Keras 2 `groups` argument and
the nested functional `model1` inside two Sequentials. So the file's `model_config` is read with
h5py, the same graph is rebuilt in Keras 3 (keras.applications.MobileNetV2 with weights=None and
the file's alpha, truncated at out_relu, then GlobalAveragePooling2D and the file's Dense head),
and every weight is set by layer name from `model_weights` with its shape checked. Serving
converts exports without TensorFlow (models/converters); this Keras rebuild is the reference the
tests check that converter against.

The command line writes keras_model.onnx and its stamp keras_model.onnx.json beside each .h5,
through models.teachable (the server does the same at start-up for a missing or stale cache):

    python -m training.teachable_convert models/classifiers/flask-mug/keras_model.h5 [--force]

Export your own model from https://teachablemachine.withgoogle.com ("Export Model" ->
"Tensorflow" -> "Keras") and unzip it into models/classifiers/<name>/.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.runtime import ModelFileError

log = logging.getLogger(__name__)

# MobileNetV2 width multipliers Teachable Machine (and keras.applications) use.
KNOWN_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
# Keras 2's MobileNetV2 pads before Conv1; Keras 3 folds that into Conv1's "same" padding, which
# pads the same way for a stride-2, 3x3 convolution, so the outputs are identical.
KERAS2_ONLY_LAYERS = frozenset({"Conv1_pad"})
# Layer settings that must agree between the file and the rebuilt backbone.
CHECKED_SETTINGS = (
    "filters",
    "kernel_size",
    "strides",
    "dilation_rate",
    "depth_multiplier",
    "use_bias",
    "epsilon",
    "max_value",
    "negative_slope",
    "threshold",
)
# Head layers this converter rebuilds from their config.
HEAD_LAYERS = frozenset({"GlobalAveragePooling2D", "Dense", "Dropout", "Activation"})


@dataclass
class TeachableFile:
    """What a Keras 2 Teachable Machine file holds, read with h5py only."""

    path: Path
    keras_version: str
    input_shape: tuple[int, int, int]
    backbone: list[dict]
    head: list[dict]
    weights: dict[str, list[tuple[str, np.ndarray]]] = field(default_factory=dict)

    @property
    def alpha(self) -> float:
        return infer_alpha(self.backbone, self.path)


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round channels as MobileNetV2 does (keras.applications' _make_divisible)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


def infer_alpha(backbone: list[dict], path: Path) -> float:
    """Find the width multiplier from block_16_project's filters (320 x alpha, rounded)."""
    layer = next((entry for entry in backbone if entry.get("name") == "block_16_project"), None)
    if layer is None:
        raise ModelFileError(f"{path}: the backbone has no block_16_project layer; it is not a MobileNetV2")
    filters = layer["config"].get("filters")
    for alpha in KNOWN_ALPHAS:
        if make_divisible(320 * alpha) == filters:
            return alpha
    raise ModelFileError(
        f"{path}: block_16_project has {filters} filters, which matches no MobileNetV2 alpha in {KNOWN_ALPHAS}"
    )


def _flatten(entry: dict, out: list[dict], shape: list[Any]) -> None:
    """Walk nested Sequentials, collecting the backbone model and the layers after it."""
    kind = entry.get("class_name")
    config = entry.get("config", {})
    if kind == "Sequential":
        for child in config.get("layers", []):
            _flatten(child, out, shape)
    elif kind == "InputLayer":
        if not shape:
            shape.append(config.get("batch_input_shape") or config.get("batch_shape"))
    elif kind in ("Functional", "Model"):
        out.append({"class_name": "Backbone", "config": config})
    else:
        if "batch_input_shape" in config and not shape:
            shape.append(config["batch_input_shape"])
        out.append(entry)


def read_teachable(path: Path) -> TeachableFile:
    """Read a Keras 2 .h5's config and weights with h5py, or raise ModelFileError."""
    path = Path(path)
    try:
        import h5py
    except ImportError:  # pragma: no cover - h5py ships with the training extras
        raise ModelFileError(f"{path}: reading Keras .h5 files needs h5py (pip install '.[train]')") from None
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    try:
        with h5py.File(path, "r") as fh:
            raw = fh.attrs.get("model_config")
            version = fh.attrs.get("keras_version", b"unknown")
            if raw is None or "model_weights" not in fh:
                raise ModelFileError(
                    f"{path}: not a full Keras model file (no model_config or model_weights)"
                )
            config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
            weights = _read_weights(fh["model_weights"])
    except ModelFileError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        raise ModelFileError(f"{path}: cannot read the Keras .h5 file (corrupt or not HDF5): {exc}") from None

    layers: list[dict] = []
    shape: list[Any] = []
    _flatten(config, layers, shape)
    if not layers or layers[0]["class_name"] != "Backbone":
        raise ModelFileError(
            f"{path}: expected a Teachable Machine model whose first part is a functional MobileNetV2"
        )
    backbone_cfg = layers[0]["config"]
    outputs = [o[0] for o in backbone_cfg.get("output_layers", [])]
    if outputs != ["out_relu"]:
        raise ModelFileError(f"{path}: the backbone must end at out_relu, it ends at {outputs}")
    backbone = backbone_cfg["layers"]
    input_layers = [entry for entry in backbone if entry["class_name"] == "InputLayer"]
    if len(input_layers) != 1:
        raise ModelFileError(f"{path}: the backbone must have one input, it has {len(input_layers)}")
    batch_shape = input_layers[0]["config"].get("batch_input_shape") or (shape[0] if shape else None)
    if not batch_shape or len(batch_shape) != 4 or batch_shape[3] != 3:
        raise ModelFileError(f"{path}: expected an input of shape (None, H, W, 3), found {batch_shape}")
    head = layers[1:]
    for entry in head:
        if entry["class_name"] not in HEAD_LAYERS:
            raise ModelFileError(
                f"{path}: cannot rebuild head layer {entry['config'].get('name')} "
                f"of type {entry['class_name']} (supported: {', '.join(sorted(HEAD_LAYERS))})"
            )
    if not any(entry["class_name"] == "Dense" for entry in head):
        raise ModelFileError(f"{path}: the model has no Dense classification head")
    return TeachableFile(
        path=path,
        keras_version=version.decode() if isinstance(version, bytes) else str(version),
        input_shape=(int(batch_shape[1]), int(batch_shape[2]), 3),
        backbone=backbone,
        head=head,
        weights=weights,
    )


def _read_weights(group: Any) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Collect weights by layer name, in the file's order, from every top-level weight group."""
    weights: dict[str, list[tuple[str, np.ndarray]]] = {}
    for top in group.attrs.get("layer_names", []):
        top = top.decode() if isinstance(top, bytes) else top
        sub = group[top]
        for full in sub.attrs.get("weight_names", []):
            full = full.decode() if isinstance(full, bytes) else full
            layer, _, weight = full.rpartition("/")
            weights.setdefault(layer or top, []).append((weight, np.asarray(sub[full])))
    return weights


def _normalise(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _weight_key(name: str) -> str:
    """Compare weights by their base name; Keras 2 calls a depthwise kernel depthwise_kernel."""
    base = name.split(":")[0].rsplit("/", 1)[-1]
    return "kernel" if base == "depthwise_kernel" else base


def build_keras_model(spec: TeachableFile):
    """Rebuild the file's model in Keras 3 and set its weights by layer name."""
    import keras

    alpha = spec.alpha
    base = keras.applications.MobileNetV2(
        input_shape=spec.input_shape, alpha=alpha, include_top=False, weights=None
    )
    _check_backbone(spec, base, alpha)
    x = base.output
    for entry in spec.head:
        cfg = entry["config"]
        kind = entry["class_name"]
        if kind == "GlobalAveragePooling2D":
            x = keras.layers.GlobalAveragePooling2D(name=cfg["name"])(x)
        elif kind == "Dense":
            x = keras.layers.Dense(
                int(cfg["units"]),
                activation=cfg.get("activation", "linear"),
                use_bias=bool(cfg.get("use_bias", True)),
                name=cfg["name"],
            )(x)
        elif kind == "Dropout":  # inactive at inference; kept so names and counts match the file
            x = keras.layers.Dropout(float(cfg.get("rate", 0.0)), name=cfg["name"])(x)
        elif kind == "Activation":
            x = keras.layers.Activation(cfg["activation"], name=cfg["name"])(x)
    if len(x.shape) != 2:
        raise ModelFileError(
            f"{spec.path}: the head does not end in a vector of class scores (shape {x.shape})"
        )
    last = spec.head[-1]["config"].get("activation")
    if last != "softmax":
        # Served confidences are probabilities; a Teachable head always ends in softmax anyway.
        x = keras.layers.Softmax(name="probabilities")(x)
    model = keras.Model(base.input, x, name="teachable")
    _set_weights(spec, model)
    return model


def _check_backbone(spec: TeachableFile, base: Any, alpha: float) -> None:
    """Check that the file's backbone is the layer-for-layer MobileNetV2 the rebuild gives."""
    file_layers = {e["name"]: e for e in spec.backbone if e["class_name"] != "InputLayer"}
    rebuilt = {layer.name: layer for layer in base.layers if type(layer).__name__ != "InputLayer"}
    expected = len(rebuilt) + len(KERAS2_ONLY_LAYERS & set(file_layers))
    missing = sorted(set(rebuilt) - set(file_layers))
    extra = sorted(set(file_layers) - set(rebuilt) - KERAS2_ONLY_LAYERS)
    if missing or extra or len(file_layers) != expected:
        raise ModelFileError(
            f"{spec.path}: the backbone has {len(file_layers)} layers but MobileNetV2(alpha={alpha}) truncated "
            f"at out_relu has {len(rebuilt)} (+ Keras 2's Conv1_pad); missing {missing[:5]}, unexpected {extra[:5]}"
        )
    for name, layer in rebuilt.items():
        entry = file_layers[name]
        kind = type(layer).__name__
        if entry["class_name"] != kind:
            raise ModelFileError(
                f"{spec.path}: layer {name} is a {entry['class_name']} in the file, a {kind} in MobileNetV2"
            )
        ours = layer.get_config()
        for key in CHECKED_SETTINGS:
            if key in entry["config"] and key in ours:
                theirs, mine = _normalise(entry["config"][key]), _normalise(ours[key])
                if theirs != mine:
                    raise ModelFileError(
                        f"{spec.path}: layer {name} has {key}={theirs} in the file, {mine} in MobileNetV2"
                    )


def _set_weights(spec: TeachableFile, model: Any) -> None:
    """Set every weighted layer from the file, checking count, names and shapes."""
    weighted = [layer for layer in model.layers if layer.weights]
    unused = sorted(set(spec.weights) - {layer.name for layer in weighted})
    if unused:
        raise ModelFileError(
            f"{spec.path}: the file has weights for layers the rebuilt model lacks: {unused[:5]}"
        )
    for layer in weighted:
        stored = spec.weights.get(layer.name)
        if stored is None:
            raise ModelFileError(f"{spec.path}: no weights in the file for layer {layer.name}")
        if len(stored) != len(layer.weights):
            raise ModelFileError(
                f"{spec.path}: layer {layer.name} has {len(stored)} weights in the file, expected {len(layer.weights)}"
            )
        for (name, array), variable in zip(stored, layer.weights, strict=True):
            if _weight_key(name) != _weight_key(variable.name):
                raise ModelFileError(f"{spec.path}: layer {layer.name} weight {name} is not {variable.name}")
            if tuple(array.shape) != tuple(variable.shape):
                raise ModelFileError(
                    f"{spec.path}: layer {layer.name} weight {name} has shape {tuple(array.shape)}, "
                    f"expected {tuple(variable.shape)}"
                )
        layer.set_weights([array for _, array in stored])


def main(argv: list[str] | None = None) -> int:
    """Convert the given .h5 files, writing each ONNX cache and stamp beside it."""
    from models.teachable import cache_is_fresh, ensure_onnx

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("h5", nargs="+", type=Path, help="keras_model.h5 files exported by Teachable Machine")
    parser.add_argument("--force", action="store_true", help="convert even when the cache is fresh")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    status = 0
    for h5 in args.h5:
        try:
            if cache_is_fresh(h5) and not args.force:
                print(f"{h5}: cache is fresh, nothing to do (use --force to rebuild)")
                continue
            onnx_path = ensure_onnx(h5, force=True)
            stamp = json.loads(onnx_path.with_suffix(".onnx.json").read_text(encoding="utf-8"))
            print(json.dumps(stamp.get("conversion", stamp), indent=2))
        except ModelFileError as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
