"""An ONNX graph written op by op for image classifiers that were built channels-last.

Every tensor is described by its channels-last shape (batch first, as Keras and TFLite see it);
rank-4 tensors are held channels-first inside the graph, since ONNX's Conv and pooling ops need
NCHW. The graph's input and output stay channels-last, so the served model takes the same
[batch, height, width, 3] tensor as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from models.converters.limits import MAX_TENSOR_ELEMENTS, check_shape
from models.runtime import ModelFileError

# Opset 17: every op used here at its current definition, loadable by any recent ONNX Runtime.
OPSET = 17
IR_VERSION = 8
TO_NCHW = (0, 3, 1, 2)
TO_NHWC = (0, 2, 3, 1)


@dataclass(frozen=True)
class QuantizedWeight:
    """Integer weights with their scales, kept integer in the graph (DequantizeLinear) as the file stores them."""

    data: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray
    axis: int

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def ndim(self) -> int:
        return self.data.ndim

    def transpose(self, *perm: int) -> QuantizedWeight:
        """Permute the axes, following the per-channel axis."""
        return QuantizedWeight(self.data.transpose(perm), self.scale, self.zero_point, perm.index(self.axis))

    @property
    def T(self) -> QuantizedWeight:  # noqa: N802 - mirrors numpy's name
        return self.transpose(*reversed(range(self.data.ndim)))


Weight = np.ndarray | QuantizedWeight


@dataclass(frozen=True)
class Tensor:
    """A value in the graph: its ONNX name and its channels-last shape (None for the batch)."""

    name: str
    shape: tuple[int | None, ...]

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def channels(self) -> int:
        return int(self.shape[-1])


def conv_output(size: int, kernel: int, stride: int, dilation: int, padding: str) -> tuple[int, int, int]:
    """Return (output size, pad before, pad after) along one axis, as TensorFlow pads."""
    span = (kernel - 1) * dilation + 1
    if padding == "same":
        out = -(-size // stride)
        total = max((out - 1) * stride + span - size, 0)
        return out, total // 2, total - total // 2
    if padding == "valid":
        if size < span:
            raise ModelFileError(f"a window of {span} does not fit in an input of size {size}")
        return (size - span) // stride + 1, 0, 0
    raise ModelFileError(f"unknown padding {padding!r} (expected 'same' or 'valid')")


class GraphBuilder:
    """Collect nodes and weights, tracking every shape, and produce a checked ModelProto."""

    def __init__(self, name: str):
        self.name = name
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._names: set[str] = set()

    # --- plumbing ---------------------------------------------------------------------------------

    def fresh(self, hint: str) -> str:
        """Return a name not used before in this graph."""
        base = "".join(c if c.isalnum() or c in "_./:-" else "_" for c in hint)[:120] or "t"
        name, n = base, 1
        while name in self._names:
            n += 1
            name = f"{base}_{n}"
        self._names.add(name)
        return name

    def const(self, array: np.ndarray, hint: str) -> str:
        """Add a constant (weights, shapes) and return its name."""
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def weight(self, w: Weight, hint: str) -> str:
        """Add a weight: float32 as is, integer ones followed by their DequantizeLinear."""
        if isinstance(w, np.ndarray):
            return self.const(w.astype(np.float32), hint)
        per_channel = w.scale.size > 1
        inputs = [
            self.const(w.data, f"{hint}_q"),
            self.const(w.scale.astype(np.float32).reshape(-1 if per_channel else ()), f"{hint}_scale"),
            self.const(w.zero_point.astype(w.data.dtype).reshape(-1 if per_channel else ()), f"{hint}_zero"),
        ]
        return self.op("DequantizeLinear", inputs, hint, **({"axis": w.axis} if per_channel else {}))

    def op(self, kind: str, inputs: list[str], hint: str, **attrs: object) -> str:
        """Add one node with one output and return the output's name."""
        out = self.fresh(hint)
        self.nodes.append(helper.make_node(kind, inputs, [out], name=out, **attrs))
        return out

    def tensor(self, name: str, shape: tuple[int | None, ...], what: str) -> Tensor:
        """Describe a new value, refusing shapes too large to compute."""
        check_shape([d or 1 for d in shape], what, limit=MAX_TENSOR_ELEMENTS)
        if any(d == 0 for d in shape):
            raise ModelFileError(f"{what}: the layer gives an empty tensor of shape {list(shape)}")
        return Tensor(name, tuple(shape))

    def channels_last(self, x: Tensor) -> str:
        """Return the name of x laid out channels-last (a transpose for rank-4 values)."""
        if x.rank != 4:
            return x.name
        return self.op("Transpose", [x.name], f"{x.name}_nhwc", perm=list(TO_NHWC))

    def from_channels_last(self, name: str, shape: tuple[int | None, ...], hint: str) -> Tensor:
        """Describe a channels-last value, transposing rank-4 values to the internal layout."""
        if len(shape) == 4:
            name = self.op("Transpose", [name], f"{hint}_nchw", perm=list(TO_NCHW))
        return self.tensor(name, shape, hint)

    def channel_axis(self, x: Tensor, axis: int, what: str) -> int:
        """Map a channels-last axis (negative allowed) to the internal layout's axis."""
        if not -x.rank <= axis < x.rank:
            raise ModelFileError(f"{what}: axis {axis} is out of range for a rank-{x.rank} tensor")
        axis %= x.rank
        if x.rank == 4:
            return (0, 2, 3, 1)[axis]
        return axis

    # --- the graph's ends -------------------------------------------------------------------------

    def image_input(self, name: str, height: int, width: int, channels: int) -> Tensor:
        """Declare the float32 [batch, height, width, channels] input."""
        shape = ["batch", height, width, channels]
        self.inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
        self._names.add(name)
        return self.from_channels_last(name, (None, height, width, channels), name)

    def output(self, x: Tensor, name: str) -> None:
        """Declare x (channels-last) as a float32 output."""
        self._names.add(name)
        self.nodes.append(helper.make_node("Identity", [self.channels_last(x)], [name], name=name))
        dims = ["batch", *x.shape[1:]]
        self.outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, dims))

    def model(self, metadata: dict[str, str]) -> onnx.ModelProto:
        """Assemble and check the model."""
        graph = helper.make_graph(self.nodes, self.name, self.inputs, self.outputs, self.initializers)
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name="models.converters",
            ir_version=IR_VERSION,
        )
        for key, value in metadata.items():
            model.metadata_props.add(key=key, value=value)
        try:
            onnx.checker.check_model(model)
        except onnx.checker.ValidationError as exc:  # a bug here rather than in the file
            raise ModelFileError(f"the converted graph is not valid ONNX: {exc}") from None
        return model

    # --- layers -----------------------------------------------------------------------------------

    def conv(
        self,
        x: Tensor,
        kernel: Weight,
        bias: Weight | None,
        *,
        strides: tuple[int, int],
        dilations: tuple[int, int],
        padding: str,
        group: int,
        hint: str,
    ) -> Tensor:
        """Convolve with an ONNX-layout kernel [out, in / group, kh, kw], padding as TensorFlow."""
        if x.rank != 4:
            raise ModelFileError(f"{hint}: a 2D convolution needs a rank-4 input, got shape {list(x.shape)}")
        out_ch, in_per_group, kh, kw = kernel.shape
        if in_per_group * group != x.channels or out_ch % group:
            raise ModelFileError(
                f"{hint}: a kernel of shape {list(kernel.shape)} in {group} groups does not fit "
                f"an input with {x.channels} channels"
            )
        oh, top, bottom = conv_output(int(x.shape[1]), kh, strides[0], dilations[0], padding)
        ow, left, right = conv_output(int(x.shape[2]), kw, strides[1], dilations[1], padding)
        inputs = [x.name, self.weight(kernel, f"{hint}_kernel")]
        if bias is not None:
            inputs.append(self.weight(bias, f"{hint}_bias"))
        name = self.op(
            "Conv",
            inputs,
            hint,
            kernel_shape=[kh, kw],
            strides=list(strides),
            dilations=list(dilations),
            pads=[top, left, bottom, right],
            group=group,
        )
        return self.tensor(name, (x.shape[0], oh, ow, out_ch), hint)

    def pad(self, x: Tensor, pads: tuple[tuple[int, int], tuple[int, int]], hint: str) -> Tensor:
        """Pad height and width with zeros."""
        if x.rank != 4:
            raise ModelFileError(f"{hint}: 2D padding needs a rank-4 input, got shape {list(x.shape)}")
        (top, bottom), (left, right) = pads
        amounts = self.const(np.array([0, 0, top, left, 0, 0, bottom, right], np.int64), f"{hint}_pads")
        name = self.op("Pad", [x.name, amounts], hint, mode="constant")
        shape = (x.shape[0], int(x.shape[1]) + top + bottom, int(x.shape[2]) + left + right, x.shape[3])
        return self.tensor(name, shape, hint)

    def scale_shift(self, x: Tensor, scale: np.ndarray, shift: np.ndarray, hint: str) -> Tensor:
        """Return x * scale + shift along the channel axis (a folded batch normalization)."""
        if scale.shape != (x.channels,) or shift.shape != (x.channels,):
            raise ModelFileError(
                f"{hint}: per-channel values of shape {scale.shape} for {x.channels} channels"
            )
        shape = (-1, 1, 1) if x.rank == 4 else (-1,)
        mul = self.op(
            "Mul", [x.name, self.const(scale.astype(np.float32).reshape(shape), f"{hint}_scale")], hint
        )
        add = self.op(
            "Add", [mul, self.const(shift.astype(np.float32).reshape(shape), f"{hint}_shift")], hint
        )
        return Tensor(add, x.shape)

    def batch_norm(
        self,
        x: Tensor,
        gamma: np.ndarray,
        beta: np.ndarray,
        mean: np.ndarray,
        var: np.ndarray,
        eps: float,
        hint: str,
    ) -> Tensor:
        """Normalize the channel axis with stored statistics (inference mode)."""
        params = [gamma, beta, mean, var]
        if any(p.shape != (x.channels,) for p in params):
            raise ModelFileError(f"{hint}: batch-norm statistics do not have {x.channels} values each")
        if x.rank in (2, 4):
            names = [self.const(p.astype(np.float32), f"{hint}_{i}") for i, p in enumerate(params)]
            return Tensor(self.op("BatchNormalization", [x.name, *names], hint, epsilon=float(eps)), x.shape)
        scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
        return self.scale_shift(x, scale, beta - mean * scale, hint)

    def unary(self, x: Tensor, kind: str, hint: str, **attrs: object) -> Tensor:
        """Apply an element-wise ONNX op."""
        return Tensor(self.op(kind, [x.name], hint, **attrs), x.shape)

    def clip(self, x: Tensor, low: float | None, high: float | None, hint: str) -> Tensor:
        """Clamp x to [low, high] (either may be open)."""
        bounds = [
            self.const(np.array(v, np.float32), f"{hint}_{which}") if v is not None else ""
            for which, v in (("min", low), ("max", high))
        ]
        return Tensor(self.op("Clip", [x.name, *bounds], hint), x.shape)

    def softmax(self, x: Tensor, axis: int, hint: str) -> Tensor:
        """Softmax along a channels-last axis."""
        return Tensor(self.op("Softmax", [x.name], hint, axis=self.channel_axis(x, axis, hint)), x.shape)

    def elementwise(self, kind: str, xs: list[Tensor], hint: str) -> Tensor:
        """Combine same-shaped tensors with Add, Sub, Mul, Max, Min or Mean."""
        if len(xs) < 2 or any(t.shape[1:] != xs[0].shape[1:] for t in xs):
            raise ModelFileError(
                f"{hint}: needs two or more inputs of one shape, got {[list(t.shape) for t in xs]}"
            )
        if kind in ("Max", "Min", "Mean"):  # these take any number of inputs
            return Tensor(self.op(kind, [t.name for t in xs], hint), xs[0].shape)
        name = xs[0].name
        for t in xs[1:]:
            name = self.op(kind, [name, t.name], hint)
        return Tensor(name, xs[0].shape)

    def concat(self, xs: list[Tensor], axis: int, hint: str) -> Tensor:
        """Concatenate along a channels-last axis."""
        first = xs[0]
        axis_in = self.channel_axis(first, axis, hint)
        axis %= first.rank
        if axis == 0 or any(
            t.rank != first.rank
            or t.shape[:axis] + t.shape[axis + 1 :] != first.shape[:axis] + first.shape[axis + 1 :]
            for t in xs
        ):
            raise ModelFileError(
                f"{hint}: cannot concatenate shapes {[list(t.shape) for t in xs]} on axis {axis}"
            )
        shape = list(first.shape)
        shape[axis] = sum(int(t.shape[axis]) for t in xs)
        return self.tensor(self.op("Concat", [t.name for t in xs], hint, axis=axis_in), tuple(shape), hint)

    def pool(
        self,
        x: Tensor,
        kind: str,
        size: tuple[int, int],
        strides: tuple[int, int],
        padding: str,
        hint: str,
    ) -> Tensor:
        """Average or max pooling; averages leave padding out of the count, as TensorFlow does."""
        if x.rank != 4:
            raise ModelFileError(f"{hint}: 2D pooling needs a rank-4 input, got shape {list(x.shape)}")
        oh, top, bottom = conv_output(int(x.shape[1]), size[0], strides[0], 1, padding)
        ow, left, right = conv_output(int(x.shape[2]), size[1], strides[1], 1, padding)
        attrs: dict[str, object] = {"kernel_shape": list(size), "strides": list(strides)}
        attrs["pads"] = [top, left, bottom, right]
        if kind == "AveragePool":
            attrs["count_include_pad"] = 0
        name = self.op(kind, [x.name], hint, **attrs)
        return self.tensor(name, (x.shape[0], oh, ow, x.shape[3]), hint)

    def global_pool(self, x: Tensor, kind: str, keepdims: bool, hint: str) -> Tensor:
        """Average or max over height and width."""
        if x.rank != 4:
            raise ModelFileError(f"{hint}: global pooling needs a rank-4 input, got shape {list(x.shape)}")
        name = self.op(kind, [x.name], hint)
        if keepdims:
            return Tensor(name, (x.shape[0], 1, 1, x.shape[3]))
        return Tensor(self.op("Flatten", [name], f"{hint}_flat", axis=1), (x.shape[0], x.shape[3]))

    def dense(self, x: Tensor, kernel: Weight, bias: Weight | None, hint: str) -> Tensor:
        """Multiply the last axis by a [in, out] kernel and add the bias."""
        if kernel.ndim != 2 or kernel.shape[0] != x.channels:
            raise ModelFileError(
                f"{hint}: a kernel of shape {list(kernel.shape)} does not fit {x.channels} inputs"
            )
        units = kernel.shape[1]
        weight = self.weight(kernel, f"{hint}_kernel")
        if x.rank == 2:
            inputs = [x.name, weight] + ([self.weight(bias, f"{hint}_bias")] if bias is not None else [])
            return self.tensor(self.op("Gemm", inputs, hint), (x.shape[0], units), hint)
        name = self.op("MatMul", [self.channels_last(x), weight], hint)
        if bias is not None:
            name = self.op("Add", [name, self.weight(bias, f"{hint}_bias")], hint)
        return self.from_channels_last(name, (*x.shape[:-1], units), hint)

    def reshape(self, x: Tensor, target: list[int], hint: str) -> Tensor:
        """Reshape each sample to a channels-last target shape (one -1 allowed)."""
        size = int(np.prod([int(d) for d in x.shape[1:]]))
        known = [d for d in target if d != -1]
        if (
            target.count(-1) > 1
            or any(d <= 0 for d in known)
            or (size % max(int(np.prod(known)), 1))
            or (-1 not in target and int(np.prod(known)) != size)
        ):
            raise ModelFileError(f"{hint}: cannot reshape {list(x.shape[1:])} to {target}")
        resolved = [d if d != -1 else size // max(int(np.prod(known)), 1) for d in target]
        shape_name = self.const(np.array([0, *resolved], np.int64), f"{hint}_shape")
        name = self.op("Reshape", [self.channels_last(x), shape_name], hint)
        return self.from_channels_last(name, (x.shape[0], *resolved), hint)

    def flatten(self, x: Tensor, hint: str) -> Tensor:
        """Flatten each sample in channels-last order."""
        size = int(np.prod([int(d) for d in x.shape[1:]]))
        return Tensor(self.op("Flatten", [self.channels_last(x)], hint, axis=1), (x.shape[0], size))

    def fake_quant(self, x: Tensor, scale: float, zero_point: int, dtype: np.dtype, hint: str) -> Tensor:
        """Round x to a quantized grid and back (QuantizeLinear then DequantizeLinear)."""
        s = self.const(np.array(scale, np.float32), f"{hint}_scale")
        z = self.const(np.array(zero_point, dtype), f"{hint}_zero")
        q = self.op("QuantizeLinear", [x.name, s, z], f"{hint}_q")
        return Tensor(self.op("DequantizeLinear", [q, s, z], f"{hint}_dq"), x.shape)
