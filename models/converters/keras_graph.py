"""Turn a Keras 2 model config (from a .h5 or a TensorFlow.js model.json) and its weights into ONNX.

The config is walked as Keras itself would build it: Sequential and Functional models nest, and
each leaf layer is written by the handler for its class in keras_layers.LAYERS. Weights are
looked up by layer and weight name, checked against the shape the layer needs, and only then read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx

from models.converters.keras_layers import LAYERS
from models.converters.limits import (
    MAX_INPUT_SIDE,
    MAX_LAYERS,
    MAX_NESTING,
    MAX_WEIGHT_BYTES,
    check_int,
    check_shape,
)
from models.converters.onnx_graph import GraphBuilder, Tensor
from models.runtime import ModelFileError

INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
MODEL_CLASSES = frozenset({"Sequential", "Functional", "Model"})

Ref = tuple[str, int, int]


class WeightStore:
    """Weights by (layer, weight) name, each read only when a layer asks for it with the right shape."""

    def __init__(self, source: str):
        self.source = source
        self._entries: dict[tuple[str, str], tuple[tuple[int, ...], Callable[[], np.ndarray]]] = {}
        self._used: set[tuple[str, str]] = set()
        self._bytes = 0

    def add(self, full_name: str, shape: Any, load: Callable[[], np.ndarray]) -> None:
        """Register a weight named like "Conv1/kernel:0" (any prefix) with its declared shape."""
        parts = str(full_name).split(":")[0].split("/")
        if len(parts) < 2 or not all(parts[-2:]):
            raise ModelFileError(f"{self.source}: weight name {full_name!r} is not '<layer>/<weight>'")
        key = (parts[-2], parts[-1])
        if key in self._entries:
            raise ModelFileError(f"{self.source}: the weight {key[0]}/{key[1]} appears twice")
        dims = check_shape(shape, f"{self.source}: weight {full_name}", limit=MAX_WEIGHT_BYTES // 4)
        self._bytes += 4 * int(np.prod(dims, dtype=np.int64))
        if self._bytes > MAX_WEIGHT_BYTES:
            raise ModelFileError(f"{self.source}: the weights exceed {MAX_WEIGHT_BYTES >> 20} MiB")
        self._entries[key] = (dims, load)

    def take(self, layer: str, names: tuple[str, ...], shape: tuple[int, ...]) -> np.ndarray:
        """Return a layer's weight (the first of names found) as float32, checking its shape first."""
        key = next(((layer, n) for n in names if (layer, n) in self._entries), None)
        if key is None:
            raise ModelFileError(f"{self.source}: layer {layer} has no weight {names[0]} in the file")
        declared, load = self._entries[key]
        if declared != tuple(shape):
            raise ModelFileError(
                f"{self.source}: layer {layer} weight {key[1]} has shape {list(declared)}, "
                f"the layer needs {list(shape)}"
            )
        array = np.asarray(load())
        if array.shape != declared or not np.issubdtype(array.dtype, np.floating):
            raise ModelFileError(
                f"{self.source}: layer {layer} weight {key[1]} is not a float array of {list(declared)}"
            )
        self._used.add(key)
        return array.astype(np.float32, copy=False)

    def unused(self) -> list[str]:
        """Name the weights no layer took."""
        return sorted(f"{layer}/{name}" for layer, name in set(self._entries) - self._used)


def node_refs(node: Any, what: str) -> list[Ref]:
    """Read one inbound node: Keras 2's [[layer, node, tensor, kwargs], ...] or Keras 3's keras_history."""
    if isinstance(node, dict):  # Keras 3: {"args": [...], "kwargs": {...}}
        found: list[Ref] = []

        def walk(value: Any) -> None:
            if isinstance(value, dict):
                history = value.get("config", {}).get("keras_history") if "config" in value else None
                if history is not None:
                    found.append(ref(history, what))
                    return
                for item in value.values():
                    walk(item)
            elif isinstance(value, list):
                for item in value:
                    walk(item)

        walk(node.get("args", []))
        return found
    if not isinstance(node, list):
        raise ModelFileError(f"{what}: an inbound node is {type(node).__name__}, expected a list")
    return [ref(item, what) for item in node]


def ref(value: Any, what: str) -> Ref:
    """Read a [layer name, node index, tensor index] reference."""
    if not isinstance(value, (list, tuple)) or len(value) < 3 or not isinstance(value[0], str):
        raise ModelFileError(f"{what}: {value!r} is not a [layer, node, tensor] reference")
    return value[0], check_int(value[1], what, high=MAX_LAYERS), check_int(value[2], what, high=MAX_LAYERS)


def ref_list(value: Any, what: str) -> list[Ref]:
    """Read input_layers/output_layers: one reference or a list of them."""
    if isinstance(value, list) and value and isinstance(value[0], str):
        return [ref(value, what)]
    if not isinstance(value, list) or not value:
        raise ModelFileError(f"{what}: expected a list of [layer, node, tensor] references, got {value!r}")
    return [ref(item, what) for item in value]


class KerasConverter:
    """Build one ONNX graph from a Keras model config and a WeightStore."""

    def __init__(self, weights: WeightStore, source: str, keras_version: str = "2"):
        self.g = GraphBuilder("teachable")
        # Keras 3 changed some activations' meaning (hard_sigmoid's slope); Teachable Machine is Keras 2.
        self.keras3 = keras_version.split(".")[0] == "3"
        self.weights = weights
        self.source = source
        self.input: Tensor | None = None
        self.layers = 0
        # Values a softmax produced: a model ending in one needs no softmax added.
        self.softmax_outputs: set[str] = set()

    def convert(self, config: Any, metadata: dict[str, str]) -> tuple[onnx.ModelProto, dict]:
        """Return the ONNX model (probabilities out, softmax added if the model lacks one) and facts about it."""
        outputs = self.call(config, None, 0)
        if len(outputs) != 1:
            raise ModelFileError(f"{self.source}: the model has {len(outputs)} outputs, expected one")
        out = outputs[0]
        if out.rank != 2:
            raise ModelFileError(
                f"{self.source}: the model ends in shape {list(out.shape)}, not a vector of class scores"
            )
        unused = self.weights.unused()
        if unused:
            raise ModelFileError(
                f"{self.source}: weights no layer uses (the config and weights disagree): {unused[:5]}"
            )
        softmax_added = out.name not in self.softmax_outputs
        if softmax_added:  # served confidences are probabilities; Teachable heads end in softmax anyway
            out = self.g.softmax(out, -1, "softmax")
        self.g.output(out, OUTPUT_NAME)
        assert self.input is not None  # call() made one or raised
        facts = {
            "input_shape": list(self.input.shape[1:]),
            "classes": out.channels,
            "layers": self.layers,
            "softmax_added": softmax_added,
        }
        return self.g.model(metadata), facts

    def call(self, entry: Any, inputs: list[Tensor] | None, depth: int) -> list[Tensor]:
        """Apply one config entry (a model or a layer) to its inputs; None means it takes the graph input."""
        if depth > MAX_NESTING:
            raise ModelFileError(f"{self.source}: models nest more than {MAX_NESTING} deep")
        if not isinstance(entry, dict) or not isinstance(entry.get("class_name"), str):
            raise ModelFileError(f"{self.source}: a layer entry has no class_name")
        kind = entry["class_name"]
        config = entry.get("config")
        if kind == "Sequential":
            return [self.sequential(config, inputs, depth)]
        if not isinstance(config, dict):
            raise ModelFileError(f"{self.source}: layer of type {kind} has no config")
        if kind in MODEL_CLASSES:
            return self.functional(config, inputs, depth)
        name = str(config.get("name") or entry.get("name") or kind)
        if inputs is None:
            inputs = [self.graph_input(config, name)]
        if kind == "InputLayer":
            return inputs
        handler = LAYERS.get(kind)
        if handler is None:
            raise ModelFileError(
                f"{self.source}: layer {name} has type {kind}, which this converter does not handle "
                f"(it handles {', '.join(sorted(LAYERS))})"
            )
        self.layers += 1
        if self.layers > MAX_LAYERS:
            raise ModelFileError(f"{self.source}: the model has more than {MAX_LAYERS} layers")
        if config.get("data_format", "channels_last") != "channels_last":
            raise ModelFileError(
                f"{self.source}: layer {name} is channels_first; only channels_last is handled"
            )
        return [handler(self, name, config, inputs)]

    def graph_input(self, config: dict, name: str) -> Tensor:
        """Create the graph's one image input from a batch_input_shape [None, H, W, C]."""
        if self.input is not None:
            raise ModelFileError(f"{self.source}: layer {name} declares a second model input")
        shape = config.get("batch_input_shape") or config.get("batch_shape")
        if not isinstance(shape, list) or len(shape) != 4 or shape[0] is not None:
            raise ModelFileError(
                f"{self.source}: the model input ({name}) must be an image batch [None, H, W, C], got {shape!r}"
            )
        height = check_int(shape[1], f"{self.source}: input height", low=1, high=MAX_INPUT_SIDE)
        width = check_int(shape[2], f"{self.source}: input width", low=1, high=MAX_INPUT_SIDE)
        channels = check_int(shape[3], f"{self.source}: input channels", low=1, high=4)
        self.input = self.g.image_input(INPUT_NAME, height, width, channels)
        return self.input

    def sequential(self, config: Any, inputs: list[Tensor] | None, depth: int) -> Tensor:
        """Chain a Sequential's layers (config {"layers": [...]}, or the older bare list)."""
        layers = config.get("layers") if isinstance(config, dict) else config
        if not isinstance(layers, list) or not layers:
            raise ModelFileError(f"{self.source}: a Sequential model has no layers")
        if inputs is not None and len(inputs) != 1:
            raise ModelFileError(f"{self.source}: a Sequential model takes one input, got {len(inputs)}")
        x = inputs[0] if inputs else None
        for layer in layers:
            if isinstance(layer, dict) and layer.get("class_name") == "InputLayer" and x is not None:
                continue  # a nested Sequential repeats its input declaration
            outputs = self.call(layer, [x] if x is not None else None, depth + 1)
            if len(outputs) != 1:
                raise ModelFileError(
                    f"{self.source}: a layer inside a Sequential gives {len(outputs)} outputs"
                )
            x = outputs[0]
        assert x is not None
        return x

    def functional(self, config: dict, inputs: list[Tensor] | None, depth: int) -> list[Tensor]:
        """Build a Functional model's layer graph from its inbound nodes."""
        what = f"{self.source}: model {config.get('name')}"
        layers = config.get("layers")
        if not isinstance(layers, list) or not layers:
            raise ModelFileError(f"{what} has no layers")
        input_refs = ref_list(config.get("input_layers"), f"{what} input_layers")
        output_refs = ref_list(config.get("output_layers"), f"{what} output_layers")
        by_name: dict[str, dict] = {}
        for layer in layers:
            if not isinstance(layer, dict):
                raise ModelFileError(f"{what}: a layer entry is not an object")
            cfg = layer.get("config")
            name = layer.get("name") or (cfg.get("name") if isinstance(cfg, dict) else None)
            if not isinstance(name, str) or name in by_name:
                raise ModelFileError(f"{what}: a layer has no name, or its name {name!r} is used twice")
            by_name[name] = layer
        values: dict[Ref, Tensor] = {}
        if inputs is not None and len(inputs) != len(input_refs):
            raise ModelFileError(f"{what} takes {len(input_refs)} inputs, got {len(inputs)}")
        for i, (name, node, tensor) in enumerate(input_refs):
            layer = by_name.get(name)
            if layer is None or layer.get("class_name") != "InputLayer":
                raise ModelFileError(f"{what}: input {name} is not an InputLayer of the model")
            values[(name, node, tensor)] = (
                inputs[i] if inputs is not None else self.call(layer, None, depth + 1)[0]
            )
        pending: list[tuple[str, int, list[Ref]]] = []
        for name, layer in by_name.items():
            if layer.get("class_name") == "InputLayer":
                continue
            nodes = layer.get("inbound_nodes")
            if not isinstance(nodes, list):
                raise ModelFileError(f"{what}: layer {name} has no inbound_nodes")
            pending += [(name, k, node_refs(node, f"{what} layer {name}")) for k, node in enumerate(nodes)]
        while pending:
            ready = [p for p in pending if all(r in values for r in p[2])]
            if not ready:
                name, _, refs = pending[0]
                missing = [r for r in refs if r not in values]
                raise ModelFileError(f"{what}: layer {name} takes {missing[0]}, which no layer gives")
            for item in ready:
                name, k, refs = item
                outs = self.call(by_name[name], [values[r] for r in refs], depth + 1)
                for t, out in enumerate(outs):
                    values[(name, k, t)] = out
            pending = [p for p in pending if p not in ready]
        missing_out = [r for r in output_refs if r not in values]
        if missing_out:
            raise ModelFileError(f"{what}: output {missing_out[0]} is not produced by any layer")
        return [values[r] for r in output_refs]
