"""Turn a TensorFlow Lite image classifier (float or int8-quantized) into ONNX.

Float models map op for op. A quantized model is written with dequantize-quantize semantics:
weights are dequantized to float32, every op runs in float, and each int8/uint8 tensor is rounded
to its own grid (QuantizeLinear then DequantizeLinear), so values land where the integer kernels
put them, up to how each kernel rounds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx

from models.converters.keras_graph import INPUT_NAME, OUTPUT_NAME
from models.converters.limits import MAX_INPUT_SIDE, MAX_WEIGHT_BYTES, MAX_WINDOW, check_int
from models.converters.onnx_graph import GraphBuilder, QuantizedWeight, Tensor, Weight
from models.converters.tflite_reader import GraphInfo, OpInfo, TensorInfo, read_tflite
from models.runtime import ModelFileError

PADDING = {0: "same", 1: "valid"}
# Fused activations: NONE, RELU, RELU_N1_TO_1, RELU6, TANH (schema ActivationFunctionType).
FUSED_CLIP = {1: (0.0, None), 2: (-1.0, 1.0), 3: (0.0, 6.0)}


class TfliteConverter:
    """Build one ONNX graph from a parsed TFLite subgraph."""

    def __init__(self, graph: GraphInfo, source: str):
        self.graph = graph
        self.source = source
        self.g = GraphBuilder("teachable")
        self.values: dict[int, Tensor] = {}
        self.consts: dict[int, np.ndarray] = {}
        self.softmax_outputs: set[int] = set()

    def convert(self, metadata: dict[str, str]) -> tuple[onnx.ModelProto, dict]:
        """Return the ONNX model and facts about it."""
        graph = self.graph
        if len(graph.inputs) != 1 or len(graph.outputs) != 1:
            raise ModelFileError(
                f"{self.source}: expected one input and one output, got {len(graph.inputs)} and {len(graph.outputs)}"
            )
        spec = graph.tensors[graph.inputs[0]]
        if len(spec.shape) != 4 or spec.shape[0] != 1:
            raise ModelFileError(
                f"{self.source}: the input must be an image batch [1, H, W, C], got {list(spec.shape)}"
            )
        height = check_int(spec.shape[1], f"{self.source}: input height", low=1, high=MAX_INPUT_SIDE)
        width = check_int(spec.shape[2], f"{self.source}: input width", low=1, high=MAX_INPUT_SIDE)
        channels = check_int(spec.shape[3], f"{self.source}: input channels", low=1, high=4)
        x = self.g.image_input(INPUT_NAME, height, width, channels)
        # A quantized input takes the same [-1, 1] floats, rounded to the model's own input grid.
        self.values[spec.index] = self.requantize(spec, x)
        for op in graph.ops:
            self.apply(op)
        out_index = graph.outputs[0]
        out = self.values.get(out_index)
        if out is None or out.rank != 2:
            raise ModelFileError(f"{self.source}: the output is not a vector of class scores")
        softmax_added = out_index not in self.softmax_outputs
        if softmax_added:
            out = self.g.softmax(out, -1, "softmax")
        self.g.output(out, OUTPUT_NAME)
        quantized = any(t.quantized and t.data is None for t in graph.tensors)
        facts = {
            "input_shape": [height, width, channels],
            "classes": out.channels,
            "layers": len(graph.ops),
            "softmax_added": softmax_added,
            "quantized": quantized,
        }
        return self.g.model(metadata), facts

    # --- tensors ----------------------------------------------------------------------------------

    def value(self, index: int, what: str) -> Tensor:
        """Return a computed tensor; constants and unknown tensors are errors here."""
        if index not in self.values:
            raise ModelFileError(f"{self.source}: {what} reads tensor {index}, which no earlier op produced")
        return self.values[index]

    def const(self, index: int, what: str) -> np.ndarray:
        """Return a constant's real values."""
        if index in self.consts:
            return self.consts[index]
        if index < 0 or self.graph.tensors[index].data is None:
            raise ModelFileError(f"{self.source}: {what} needs a constant for tensor {index}")
        return self.graph.tensors[index].real()

    def weight(self, index: int, what: str) -> Weight:
        """Return a weight: integer with its scales when the file quantizes it, else float32."""
        spec = self.graph.tensors[index] if index >= 0 else None
        if spec is None or index in self.consts or spec.data is None or not spec.quantized:
            return self.const(index, what)
        assert spec.scale is not None
        zero = spec.zero_point if spec.zero_point is not None else np.zeros(spec.scale.size, np.int64)
        if (
            spec.data.ndim == 0
            or zero.size != spec.scale.size
            or (spec.scale.size > 1 and spec.scale.size != spec.data.shape[spec.axis])
        ):
            raise ModelFileError(
                f"{self.source}: {what}: the quantization of tensor {spec.name} does not fit its shape"
            )
        return QuantizedWeight(np.array(spec.data), spec.scale, zero, spec.axis)

    def operand(self, index: int, like: Tensor, what: str) -> Tensor:
        """Return a computed tensor, or a constant laid out to broadcast against like."""
        if index in self.values:
            return self.values[index]
        array = self.const(index, what)
        if array.ndim == 4 and like.rank == 4:
            array = array.transpose(0, 3, 1, 2)
        elif array.ndim == 1 and like.rank == 4:
            array = array.reshape(-1, 1, 1)
        elif array.ndim > like.rank:
            raise ModelFileError(f"{self.source}: {what} broadcasts a constant of shape {list(array.shape)}")
        return Tensor(self.g.const(array, f"{what}_const"), like.shape)

    def requantize(self, spec: TensorInfo, y: Tensor) -> Tensor:
        """Round a value onto its tensor's int8/uint8 grid, when the tensor is quantized."""
        if not spec.quantized:
            return y
        if spec.dtype not in (np.dtype("i1"), np.dtype("u1")) or spec.scale is None or spec.scale.size != 1:
            raise ModelFileError(
                f"{self.source}: tensor {spec.name} is quantized as {spec.dtype} per channel; not handled"
            )
        zero = int(spec.zero_point[0]) if spec.zero_point is not None and spec.zero_point.size else 0
        return self.g.fake_quant(y, float(spec.scale[0]), zero, spec.dtype, spec.name or f"t{spec.index}")

    def apply(self, op: OpInfo) -> None:
        """Write one op and record its output."""
        handler = OPS.get(op.kind)
        if handler is None:
            raise ModelFileError(
                f"{self.source}: op {op.kind} is not handled (handled: {', '.join(sorted(OPS))})"
            )
        if len(op.outputs) != 1 or op.outputs[0] < 0:
            raise ModelFileError(f"{self.source}: a {op.kind} op must have one output")
        spec = self.graph.tensors[op.outputs[0]]
        what = f"{op.kind} {spec.name}"
        if op.kind == "DEQUANTIZE" and op.inputs and op.inputs[0] not in self.values:
            self.consts[spec.index] = self.const(op.inputs[0], what)  # float16 or int8 weights
            return
        y = handler(self, op, what)
        act = op.options.get("FusedActivationFunction", 0)
        if act in FUSED_CLIP:
            y = self.g.clip(y, *FUSED_CLIP[act], what)
        elif act == 4:
            y = self.g.unary(y, "Tanh", what)
        elif act:
            raise ModelFileError(f"{self.source}: {what} has fused activation {act}, which is not handled")
        if tuple(y.shape[1:]) != tuple(spec.shape[1:]):
            raise ModelFileError(
                f"{self.source}: {what} declares shape {list(spec.shape)} but computes {[1, *y.shape[1:]]}"
            )
        if op.kind == "SOFTMAX" or (handler is passthrough and op.inputs[0] in self.softmax_outputs):
            self.softmax_outputs.add(spec.index)
        self.values[spec.index] = self.requantize(spec, y)


def window(op: OpInfo, what: str) -> dict:
    """Read strides, dilations and padding of a convolution or pooling op."""
    o = op.options
    if not o or o.get("Padding") not in PADDING:
        raise ModelFileError(f"{what}: missing options or unknown padding")
    dil = (o.get("DilationHFactor", 1), o.get("DilationWFactor", 1))
    return {
        "strides": (
            check_int(o["StrideH"], f"{what} stride", low=1, high=MAX_WINDOW),
            check_int(o["StrideW"], f"{what} stride", low=1, high=MAX_WINDOW),
        ),
        "dilations": tuple(check_int(d, f"{what} dilation", low=1, high=MAX_WINDOW) for d in dil),
        "padding": PADDING[o["Padding"]],
    }


def conv_2d(c: TfliteConverter, op: OpInfo, what: str) -> Tensor:
    x = c.value(op.inputs[0], what)
    kernel = c.weight(op.inputs[1], what)  # [out, kh, kw, in / groups]
    bias = c.weight(op.inputs[2], what) if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
    if kernel.ndim != 4 or kernel.shape[3] == 0 or x.rank != 4 or x.channels % kernel.shape[3]:
        raise ModelFileError(
            f"{c.source}: {what} has a kernel of shape {list(kernel.shape)} for input {list(x.shape)}"
        )
    w = window(op, what)
    return c.g.conv(
        x, kernel.transpose(0, 3, 1, 2), bias, group=x.channels // kernel.shape[3], hint=what, **w
    )


def depthwise_conv_2d(c: TfliteConverter, op: OpInfo, what: str) -> Tensor:
    x = c.value(op.inputs[0], what)
    kernel = c.weight(op.inputs[1], what)  # [1, kh, kw, in * multiplier]
    bias = c.weight(op.inputs[2], what) if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
    if kernel.ndim != 4 or kernel.shape[0] != 1 or x.rank != 4 or kernel.shape[3] % x.channels:
        raise ModelFileError(
            f"{c.source}: {what} has a kernel of shape {list(kernel.shape)} for input {list(x.shape)}"
        )
    return c.g.conv(x, kernel.transpose(3, 0, 1, 2), bias, group=x.channels, hint=what, **window(op, what))


def fully_connected(c: TfliteConverter, op: OpInfo, what: str) -> Tensor:
    x = c.value(op.inputs[0], what)
    weights = c.weight(op.inputs[1], what)  # [units, in]
    bias = c.weight(op.inputs[2], what) if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
    if op.options.get("WeightsFormat", 0) != 0 or weights.ndim != 2:
        raise ModelFileError(f"{c.source}: {what} stores its weights in a layout that is not handled")
    if x.rank != 2:
        x = c.g.flatten(x, f"{what}_flat")
    return c.g.dense(x, weights.T, bias, what)


def binary(kind: str) -> Callable[[TfliteConverter, OpInfo, str], Tensor]:
    """Return a handler for an element-wise op on two tensors (either may be a constant)."""

    def handler(c: TfliteConverter, op: OpInfo, what: str) -> Tensor:
        if len(op.inputs) != 2:
            raise ModelFileError(f"{c.source}: {what} takes two inputs")
        first = next((i for i in op.inputs if i in c.values), None)
        if first is None:
            raise ModelFileError(f"{c.source}: {what} has no computed input")
        like = c.values[first]
        a, b = (c.operand(i, like, what) for i in op.inputs)
        return c.g.elementwise(kind, [a, b], what)

    return handler


def mean(c: TfliteConverter, op: OpInfo, what: str) -> Tensor:
    x = c.value(op.inputs[0], what)
    axes = sorted({int(a) % max(x.rank, 1) for a in c.const(op.inputs[1], what).reshape(-1)})
    if x.rank != 4 or axes != [1, 2]:
        raise ModelFileError(
            f"{c.source}: {what} averages axes {axes}; only the spatial mean of an image is handled"
        )
    return c.g.global_pool(x, "GlobalAveragePool", bool(op.options.get("KeepDims", False)), what)


def pool(kind: str) -> Callable[[TfliteConverter, OpInfo, str], Tensor]:
    """Return a handler for average or max pooling."""

    def handler(c: TfliteConverter, op: OpInfo, what: str) -> Tensor:
        w = window(op, what)
        o = op.options
        size = (
            check_int(o["FilterHeight"], f"{what} filter", low=1, high=MAX_WINDOW),
            check_int(o["FilterWidth"], f"{what} filter", low=1, high=MAX_WINDOW),
        )
        return c.g.pool(c.value(op.inputs[0], what), kind, size, w["strides"], w["padding"], what)

    return handler


def softmax(c: TfliteConverter, op: OpInfo, what: str) -> Tensor:
    x = c.value(op.inputs[0], what)
    beta = float(op.options.get("Beta", 1.0))
    if beta != 1.0:
        x = Tensor(
            c.g.op("Mul", [x.name, c.g.const(np.array(beta, np.float32), f"{what}_beta")], what), x.shape
        )
    return c.g.softmax(x, -1, what)


def reshape(c: TfliteConverter, op: OpInfo, what: str) -> Tensor:
    """RESHAPE and SQUEEZE: to the output shape the file declares, batch kept."""
    target = c.graph.tensors[op.outputs[0]].shape
    if not target or target[0] != 1 or len(target) > 4:
        raise ModelFileError(f"{c.source}: {what} reshapes to {list(target)}; a batch-first shape is needed")
    return c.g.reshape(c.value(op.inputs[0], what), list(target[1:]), what)


def pad(c: TfliteConverter, op: OpInfo, what: str) -> Tensor:
    x = c.value(op.inputs[0], what)
    amounts = c.const(op.inputs[1], what).astype(np.int64)
    if amounts.shape != (4, 2) or x.rank != 4 or amounts[0].any() or amounts[3].any() or (amounts < 0).any():
        raise ModelFileError(
            f"{c.source}: {what} pads {amounts.tolist()}; only height and width padding is handled"
        )
    if len(op.inputs) > 2 and op.inputs[2] >= 0 and c.const(op.inputs[2], what).any():
        raise ModelFileError(f"{c.source}: {what} pads with a value other than zero")
    if amounts.max() > MAX_WEIGHT_BYTES:
        raise ModelFileError(f"{c.source}: {what} pads by {amounts.max()}")
    return c.g.pad(
        x, ((int(amounts[1, 0]), int(amounts[1, 1])), (int(amounts[2, 0]), int(amounts[2, 1]))), what
    )


def concatenation(c: TfliteConverter, op: OpInfo, what: str) -> Tensor:
    xs = [c.value(i, what) for i in op.inputs]
    return c.g.concat(xs, check_int(op.options.get("Axis", -1), f"{what} axis", low=-8, high=8), what)


def unary(kind: str, **attrs: object) -> Callable[[TfliteConverter, OpInfo, str], Tensor]:
    """Return a handler for an element-wise op on one tensor."""

    def handler(c: TfliteConverter, op: OpInfo, what: str) -> Tensor:
        return c.g.unary(c.value(op.inputs[0], what), kind, what, **attrs)

    return handler


def clip(low: float | None, high: float | None) -> Callable[[TfliteConverter, OpInfo, str], Tensor]:
    """Return a handler for RELU, RELU6 and RELU_N1_TO_1."""

    def handler(c: TfliteConverter, op: OpInfo, what: str) -> Tensor:
        return c.g.clip(c.value(op.inputs[0], what), low, high, what)

    return handler


def leaky_relu(c: TfliteConverter, op: OpInfo, what: str) -> Tensor:
    return c.g.unary(
        c.value(op.inputs[0], what), "LeakyRelu", what, alpha=float(op.options.get("Alpha", 0.2))
    )


def passthrough(c: TfliteConverter, op: OpInfo, what: str) -> Tensor:
    """QUANTIZE and DEQUANTIZE of a computed tensor: the value is kept, the output's grid applied after."""
    return c.value(op.inputs[0], what)


OPS: dict[str, Callable[[TfliteConverter, OpInfo, str], Tensor]] = {
    "CONV_2D": conv_2d,
    "DEPTHWISE_CONV_2D": depthwise_conv_2d,
    "FULLY_CONNECTED": fully_connected,
    "ADD": binary("Add"),
    "SUB": binary("Sub"),
    "MUL": binary("Mul"),
    "MEAN": mean,
    "AVERAGE_POOL_2D": pool("AveragePool"),
    "MAX_POOL_2D": pool("MaxPool"),
    "SOFTMAX": softmax,
    "RESHAPE": reshape,
    "SQUEEZE": reshape,
    "PAD": pad,
    "PADV2": pad,
    "CONCATENATION": concatenation,
    "RELU": clip(0.0, None),
    "RELU6": clip(0.0, 6.0),
    "RELU_N1_TO_1": clip(-1.0, 1.0),
    "LOGISTIC": unary("Sigmoid"),
    "TANH": unary("Tanh"),
    "HARD_SWISH": unary("HardSwish"),
    "LEAKY_RELU": leaky_relu,
    "QUANTIZE": passthrough,
    "DEQUANTIZE": passthrough,
}


def convert_tflite(path: Path, metadata: dict[str, str]) -> tuple[onnx.ModelProto, dict]:
    """Convert a .tflite file to an ONNX ModelProto; return it with facts about the model."""
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_WEIGHT_BYTES:
        raise ModelFileError(f"{path.name} is {size} bytes, over the {MAX_WEIGHT_BYTES >> 20} MiB allowed")
    graph = read_tflite(path.read_bytes(), path.name)
    return TfliteConverter(graph, path.name).convert(metadata)
