"""Read a TensorFlow Lite flatbuffer into plain tensors and ops, checking every index and size."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.converters.limits import MAX_LAYERS, MAX_WEIGHT_BYTES, check_shape
from models.runtime import ModelFileError

DTYPES = {
    "FLOAT32": np.dtype("<f4"),
    "FLOAT16": np.dtype("<f2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "UINT8": np.dtype("u1"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
}
# The options each handled op carries: (options table class, fields read from it).
OPTION_FIELDS = {
    "CONV_2D": (
        "Conv2DOptions",
        ("Padding", "StrideW", "StrideH", "FusedActivationFunction", "DilationWFactor", "DilationHFactor"),
    ),
    "DEPTHWISE_CONV_2D": (
        "DepthwiseConv2DOptions",
        (
            "Padding",
            "StrideW",
            "StrideH",
            "DepthMultiplier",
            "FusedActivationFunction",
            "DilationWFactor",
            "DilationHFactor",
        ),
    ),
    "FULLY_CONNECTED": ("FullyConnectedOptions", ("FusedActivationFunction", "WeightsFormat", "KeepNumDims")),
    "ADD": ("AddOptions", ("FusedActivationFunction",)),
    "SUB": ("SubOptions", ("FusedActivationFunction",)),
    "MUL": ("MulOptions", ("FusedActivationFunction",)),
    "MEAN": ("ReducerOptions", ("KeepDims",)),
    "AVERAGE_POOL_2D": (
        "Pool2DOptions",
        ("Padding", "StrideW", "StrideH", "FilterWidth", "FilterHeight", "FusedActivationFunction"),
    ),
    "MAX_POOL_2D": (
        "Pool2DOptions",
        ("Padding", "StrideW", "StrideH", "FilterWidth", "FilterHeight", "FusedActivationFunction"),
    ),
    "SOFTMAX": ("SoftmaxOptions", ("Beta",)),
    "CONCATENATION": ("ConcatenationOptions", ("Axis", "FusedActivationFunction")),
    "LEAKY_RELU": ("LeakyReluOptions", ("Alpha",)),
}
# Errors the generated flatbuffer accessors raise on offsets that point outside the file.
CORRUPT = (IndexError, struct.error, ValueError, TypeError, AttributeError, OverflowError)


@dataclass
class TensorInfo:
    """One tensor: shape (batch first, channels last), storage type, constant data, quantization."""

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    data: np.ndarray | None = None
    scale: np.ndarray | None = None
    zero_point: np.ndarray | None = None
    axis: int = 0

    @property
    def quantized(self) -> bool:
        """True for integer values that carry a scale (int8/uint8 activations, int32 biases)."""
        return self.scale is not None and self.dtype.kind in "iu"

    def real(self) -> np.ndarray:
        """Return the constant's real values as float32 (dequantized per tensor or per channel)."""
        assert self.data is not None
        if self.scale is None or self.dtype.kind == "f":
            return self.data.astype(np.float32)
        shape = [1] * self.data.ndim
        if self.scale.size > 1:
            if self.data.ndim == 0 or self.scale.size != self.data.shape[self.axis]:
                raise ModelFileError(
                    f"tensor {self.name}: {self.scale.size} scales for shape {list(self.shape)}"
                )
            shape[self.axis] = -1
        scale = self.scale.astype(np.float64).reshape(shape)
        zero = (self.zero_point if self.zero_point is not None else np.zeros(1)).astype(np.float64)
        zero = zero.reshape(shape) if zero.size == self.scale.size else zero.reshape(-1)[:1]
        return ((self.data.astype(np.float64) - zero) * scale).astype(np.float32)


@dataclass
class OpInfo:
    """One operator: its builtin name, tensor indexes (-1 for an omitted optional input) and options."""

    kind: str
    inputs: list[int]
    outputs: list[int]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class GraphInfo:
    """The first subgraph of a model: tensors, ops in execution order, graph inputs and outputs."""

    tensors: list[TensorInfo]
    ops: list[OpInfo]
    inputs: list[int]
    outputs: list[int]


def names_of(enum: type) -> dict[int, str]:
    """Map a generated enum class's values to their names."""
    return {v: k for k, v in vars(enum).items() if not k.startswith("_") and isinstance(v, int)}


def read_tflite(data: bytes, source: str) -> GraphInfo:
    """Parse a .tflite flatbuffer, or raise ModelFileError saying what is wrong with it."""
    import tflite

    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelFileError(f"{source}: not a TensorFlow Lite model (no TFL3 identifier)")
    try:
        model = tflite.Model.GetRootAsModel(data, 0)
        if model.SubgraphsLength() < 1:
            raise ModelFileError(f"{source}: the model has no subgraph")
        graph = model.Subgraphs(0)
        if graph.TensorsLength() > 4 * MAX_LAYERS or graph.OperatorsLength() > MAX_LAYERS:
            raise ModelFileError(f"{source}: the model has too many tensors or ops")
        ops_by_code = names_of(tflite.BuiltinOperator)
        codes = []
        for i in range(model.OperatorCodesLength()):
            code = model.OperatorCodes(i)
            value = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            name = ops_by_code.get(value, f"builtin {value}")
            if name == "CUSTOM":
                name = f"CUSTOM {(code.CustomCode() or b'').decode('utf-8', 'replace')}"
            codes.append(name)
        types = names_of(tflite.TensorType)
        tensors = [
            read_tensor(model, graph.Tensors(i), i, data, types, source) for i in range(graph.TensorsLength())
        ]
        option_types = names_of(tflite.BuiltinOptions)
        ops = [
            read_op(tflite, graph.Operators(i), codes, len(tensors), option_types, source)
            for i in range(graph.OperatorsLength())
        ]
        inputs = [int(i) for i in graph.InputsAsNumpy()] if graph.InputsLength() else []
        outputs = [int(i) for i in graph.OutputsAsNumpy()] if graph.OutputsLength() else []
    except ModelFileError:
        raise
    except CORRUPT as exc:
        raise ModelFileError(
            f"{source}: the TensorFlow Lite file is corrupt ({type(exc).__name__}: {exc})"
        ) from None
    for i in inputs + outputs:
        if not 0 <= i < len(tensors):
            raise ModelFileError(f"{source}: the graph names tensor {i}, which does not exist")
    return GraphInfo(tensors, ops, inputs, outputs)


def read_tensor(
    model: Any, t: Any, index: int, data: bytes, types: dict[int, str], source: str
) -> TensorInfo:
    """Read one tensor's description and, for a constant, a view of its bytes."""
    name = (t.Name() or b"").decode("utf-8", "replace")
    what = f"{source}: tensor {name or index}"
    dims = check_shape([int(d) for d in t.ShapeAsNumpy()] if t.ShapeLength() else [], what)
    kind = types.get(t.Type(), str(t.Type()))
    dtype = DTYPES.get(kind)
    if dtype is None:
        raise ModelFileError(f"{what} has type {kind}, which this converter does not handle")
    info = TensorInfo(index, name, dims, dtype)
    q = t.Quantization()
    if q is not None and q.ScaleLength():
        if q.ScaleLength() > 1 << 16:
            raise ModelFileError(f"{what}: {q.ScaleLength()} quantization scales")
        info.scale = q.ScaleAsNumpy().astype(np.float32)
        info.zero_point = q.ZeroPointAsNumpy().astype(np.int64) if q.ZeroPointLength() else None
        info.axis = int(q.QuantizedDimension())
        if (
            not np.all(np.isfinite(info.scale))
            or np.any(info.scale <= 0)
            or not 0 <= info.axis < max(len(dims), 1)
        ):
            raise ModelFileError(f"{what}: invalid quantization parameters")
    buffer_index = t.Buffer()
    if not 0 <= buffer_index < model.BuffersLength():
        raise ModelFileError(f"{what} refers to buffer {buffer_index}, which does not exist")
    raw = buffer_bytes(model.Buffers(buffer_index), data, what)
    if raw is not None:
        expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
        if expected > MAX_WEIGHT_BYTES or len(raw) != expected:
            raise ModelFileError(
                f"{what}: its data is {len(raw)} bytes, its shape {list(dims)} needs {expected}"
            )
        info.data = np.frombuffer(raw, dtype=dtype).reshape(dims)
    return info


def buffer_bytes(buffer: Any, data: bytes, what: str) -> memoryview | None:
    """Return a buffer's bytes (inline, or at an offset for files over 2 GB), or None when empty."""
    offset, size = buffer.Offset(), buffer.Size()
    if offset > 1:
        if offset + size > len(data):
            raise ModelFileError(f"{what}: its data lies outside the file")
        return memoryview(data)[offset : offset + size]
    if buffer.DataLength() == 0:
        return None
    return memoryview(buffer.DataAsNumpy().tobytes())


def read_op(
    tflite: Any, op: Any, codes: list[str], count: int, option_types: dict[int, str], source: str
) -> OpInfo:
    """Read one operator, resolving its code and the options of the ops handled."""
    index = op.OpcodeIndex()
    if not 0 <= index < len(codes):
        raise ModelFileError(f"{source}: an op refers to operator code {index}, which does not exist")
    kind = codes[index]
    inputs = [int(i) for i in op.InputsAsNumpy()] if op.InputsLength() else []
    outputs = [int(i) for i in op.OutputsAsNumpy()] if op.OutputsLength() else []
    for i in inputs + outputs:
        if not -1 <= i < count:
            raise ModelFileError(f"{source}: a {kind} op refers to tensor {i}, which does not exist")
    info = OpInfo(kind, inputs, outputs)
    spec = OPTION_FIELDS.get(kind)
    table = op.BuiltinOptions()
    if spec is not None and table is not None:
        class_name, fields = spec
        if option_types.get(op.BuiltinOptionsType()) != class_name:
            raise ModelFileError(
                f"{source}: a {kind} op carries {option_types.get(op.BuiltinOptionsType())} options"
            )
        options = getattr(tflite, class_name)()
        options.Init(table.Bytes, table.Pos)
        info.options = {name: getattr(options, name)() for name in fields}
    return info
