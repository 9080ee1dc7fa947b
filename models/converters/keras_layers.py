"""One handler per Keras layer class: read its config, take its weights, write its ONNX ops."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from models.converters.limits import MAX_CHANNELS, MAX_WINDOW, check_int, check_pair
from models.converters.onnx_graph import Tensor
from models.runtime import ModelFileError

if TYPE_CHECKING:
    from models.converters.keras_graph import KerasConverter

Handler = Callable[["KerasConverter", str, dict, list[Tensor]], Tensor]


def one(c: KerasConverter, name: str, xs: list[Tensor]) -> Tensor:
    """Return a single-input layer's input."""
    if len(xs) != 1:
        raise ModelFileError(f"{c.source}: layer {name} takes one input, got {len(xs)}")
    return xs[0]


def number(value: Any, what: str) -> float:
    """Return a finite number from the config."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise ModelFileError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def activate(c: KerasConverter, x: Tensor, activation: Any, hint: str) -> Tensor:
    """Apply a Keras activation given by name (Keras 2 meanings, as Teachable Machine's exports use)."""
    g = c.g
    kind = activation if activation is not None else "linear"
    if kind == "linear":
        return x
    if kind == "softmax":
        out = g.softmax(x, -1, hint)
        c.softmax_outputs.add(out.name)
        return out
    if kind == "relu6":
        return g.clip(x, 0.0, 6.0, hint)
    if kind in ("swish", "silu"):
        return Tensor(g.op("Mul", [x.name, g.unary(x, "Sigmoid", hint).name], hint), x.shape)
    if kind == "hard_sigmoid":  # Keras 2: clip(0.2 x + 0.5, 0, 1); Keras 3: clip(x / 6 + 0.5, 0, 1)
        return g.unary(x, "HardSigmoid", hint, alpha=1 / 6 if c.keras3 else 0.2, beta=0.5)
    onnx_op = {
        "relu": "Relu",
        "sigmoid": "Sigmoid",
        "tanh": "Tanh",
        "elu": "Elu",
        "selu": "Selu",
        "softplus": "Softplus",
        "softsign": "Softsign",
        "exponential": "Exp",
    }.get(kind if isinstance(kind, str) else "")
    if onnx_op is None:
        raise ModelFileError(
            f"{c.source}: layer {hint} uses activation {kind!r}, which this converter does not handle"
        )
    return g.unary(x, onnx_op, hint)


def conv_settings(c: KerasConverter, name: str, cfg: dict) -> dict:
    """Read kernel size, strides, dilation and padding shared by the convolution layers."""
    what = f"{c.source}: layer {name}"
    padding = cfg.get("padding", "valid")
    if padding not in ("same", "valid"):
        raise ModelFileError(f"{what}: padding {padding!r} is not 'same' or 'valid'")
    return {
        "kernel": check_pair(cfg.get("kernel_size"), f"{what} kernel_size"),
        "strides": check_pair(cfg.get("strides", 1), f"{what} strides"),
        "dilations": check_pair(cfg.get("dilation_rate", 1), f"{what} dilation_rate"),
        "padding": padding,
    }


def depthwise_kernel(kernel: np.ndarray) -> np.ndarray:
    """Turn a Keras depthwise kernel [kh, kw, in, multiplier] into ONNX's [in * multiplier, 1, kh, kw]."""
    kh, kw, channels, mult = kernel.shape
    return kernel.reshape(kh, kw, channels * mult).transpose(2, 0, 1)[:, np.newaxis]


def conv2d(c: KerasConverter, name: str, cfg: dict, xs: list[Tensor]) -> Tensor:
    x = one(c, name, xs)
    s = conv_settings(c, name, cfg)
    filters = check_int(cfg.get("filters"), f"{c.source}: layer {name} filters", low=1)
    groups = check_int(cfg.get("groups", 1), f"{c.source}: layer {name} groups", low=1)
    if x.rank != 4 or x.channels % groups:
        raise ModelFileError(f"{c.source}: layer {name} cannot split {list(x.shape)} into {groups} groups")
    kernel = c.weights.take(name, ("kernel",), (*s["kernel"], x.channels // groups, filters))
    bias = c.weights.take(name, ("bias",), (filters,)) if cfg.get("use_bias", True) else None
    y = c.g.conv(
        x,
        kernel.transpose(3, 2, 0, 1),
        bias,
        strides=s["strides"],
        dilations=s["dilations"],
        padding=s["padding"],
        group=groups,
        hint=name,
    )
    return activate(c, y, cfg.get("activation"), name)


def depthwise_conv2d(c: KerasConverter, name: str, cfg: dict, xs: list[Tensor]) -> Tensor:
    x = one(c, name, xs)
    s = conv_settings(c, name, cfg)
    mult = check_int(cfg.get("depth_multiplier", 1), f"{c.source}: layer {name} depth_multiplier", low=1)
    if x.rank != 4 or x.channels * mult > MAX_CHANNELS:
        raise ModelFileError(f"{c.source}: layer {name} cannot apply to an input of shape {list(x.shape)}")
    # Keras 2 names it depthwise_kernel; Keras 3 saves it as kernel.
    kernel = c.weights.take(name, ("depthwise_kernel", "kernel"), (*s["kernel"], x.channels, mult))
    bias = c.weights.take(name, ("bias",), (x.channels * mult,)) if cfg.get("use_bias", True) else None
    y = c.g.conv(
        x,
        depthwise_kernel(kernel),
        bias,
        strides=s["strides"],
        dilations=s["dilations"],
        padding=s["padding"],
        group=x.channels,
        hint=name,
    )
    return activate(c, y, cfg.get("activation"), name)


def separable_conv2d(c: KerasConverter, name: str, cfg: dict, xs: list[Tensor]) -> Tensor:
    x = one(c, name, xs)
    s = conv_settings(c, name, cfg)
    mult = check_int(cfg.get("depth_multiplier", 1), f"{c.source}: layer {name} depth_multiplier", low=1)
    filters = check_int(cfg.get("filters"), f"{c.source}: layer {name} filters", low=1)
    if x.rank != 4 or x.channels * mult > MAX_CHANNELS:
        raise ModelFileError(f"{c.source}: layer {name} cannot apply to an input of shape {list(x.shape)}")
    depthwise = c.weights.take(name, ("depthwise_kernel",), (*s["kernel"], x.channels, mult))
    pointwise = c.weights.take(name, ("pointwise_kernel",), (1, 1, x.channels * mult, filters))
    bias = c.weights.take(name, ("bias",), (filters,)) if cfg.get("use_bias", True) else None
    mid = c.g.conv(
        x,
        depthwise_kernel(depthwise),
        None,
        strides=s["strides"],
        dilations=s["dilations"],
        padding=s["padding"],
        group=x.channels,
        hint=f"{name}_depthwise",
    )
    y = c.g.conv(
        mid,
        pointwise.transpose(3, 2, 0, 1),
        bias,
        strides=(1, 1),
        dilations=(1, 1),
        padding="valid",
        group=1,
        hint=name,
    )
    return activate(c, y, cfg.get("activation"), name)


def batch_normalization(c: KerasConverter, name: str, cfg: dict, xs: list[Tensor]) -> Tensor:
    x = one(c, name, xs)
    axis = cfg.get("axis", -1)
    if isinstance(axis, list) and len(axis) == 1:
        axis = axis[0]
    if axis not in (-1, x.rank - 1):
        raise ModelFileError(
            f"{c.source}: layer {name} normalizes axis {axis}; only the channel axis is handled"
        )
    n = (x.channels,)
    gamma = c.weights.take(name, ("gamma",), n) if cfg.get("scale", True) else np.ones(n, np.float32)
    beta = c.weights.take(name, ("beta",), n) if cfg.get("center", True) else np.zeros(n, np.float32)
    mean = c.weights.take(name, ("moving_mean",), n)
    var = c.weights.take(name, ("moving_variance",), n)
    eps = number(cfg.get("epsilon", 1e-3), f"{c.source}: layer {name} epsilon")
    return c.g.batch_norm(x, gamma, beta, mean, var, eps, name)


def relu(c: KerasConverter, name: str, cfg: dict, xs: list[Tensor]) -> Tensor:
    x = one(c, name, xs)
    what = f"{c.source}: layer {name}"
    max_value = cfg.get("max_value")
    slope = number(cfg.get("negative_slope", 0.0) or 0.0, f"{what} negative_slope")
    if number(cfg.get("threshold", 0.0) or 0.0, f"{what} threshold") != 0:
        raise ModelFileError(f"{what}: a ReLU with a threshold is not handled")
    y = c.g.unary(x, "LeakyRelu", name, alpha=slope) if slope else None
    if max_value is None:
        return y or c.g.unary(x, "Relu", name)
    high = number(max_value, f"{what} max_value")
    return c.g.clip(y, None, high, name) if y else c.g.clip(x, 0.0, high, name)


def leaky_relu(c: KerasConverter, name: str, cfg: dict, xs: list[Tensor]) -> Tensor:
    # Keras 2 calls the slope alpha (default 0.3); Keras 3 calls it negative_slope.
    slope = number(cfg.get("alpha", cfg.get("negative_slope", 0.3)), f"{c.source}: layer {name} alpha")
    return c.g.unary(one(c, name, xs), "LeakyRelu", name, alpha=slope)


def activation(c: KerasConverter, name: str, cfg: dict, xs: list[Tensor]) -> Tensor:
    return activate(c, one(c, name, xs), cfg.get("activation"), name)


def softmax(c: KerasConverter, name: str, cfg: dict, xs: list[Tensor]) -> Tensor:
    axis = cfg.get("axis", -1)
    if isinstance(axis, list) and len(axis) == 1:
        axis = axis[0]
    x = one(c, name, xs)
    out = c.g.softmax(
        x, check_int(axis, f"{c.source}: layer {name} axis", low=-x.rank, high=x.rank - 1), name
    )
    c.softmax_outputs.add(out.name)
    return out


def merge(kind: str) -> Handler:
    """Return a handler that combines its inputs element-wise with one ONNX op."""

    def handler(c: KerasConverter, name: str, cfg: dict, xs: list[Tensor]) -> Tensor:
        return c.g.elementwise(kind, xs, name)

    return handler


def subtract(c: KerasConverter, name: str, cfg: dict, xs: list[Tensor]) -> Tensor:
    if len(xs) != 2:
        raise ModelFileError(f"{c.source}: layer {name} subtracts two inputs, got {len(xs)}")
    return c.g.elementwise("Sub", xs, name)


def concatenate(c: KerasConverter, name: str, cfg: dict, xs: list[Tensor]) -> Tensor:
    if len(xs) < 2:
        raise ModelFileError(f"{c.source}: layer {name} concatenates two or more inputs, got {len(xs)}")
    axis = check_int(cfg.get("axis", -1), f"{c.source}: layer {name} axis", low=-8, high=8)
    return c.g.concat(xs, axis, name)


def zero_padding2d(c: KerasConverter, name: str, cfg: dict, xs: list[Tensor]) -> Tensor:
    what = f"{c.source}: layer {name} padding"
    pad = cfg.get("padding", 1)
    if isinstance(pad, list) and len(pad) == 2 and all(isinstance(p, list) for p in pad):
        rows, cols = check_pair(pad[0], what, low=0), check_pair(pad[1], what, low=0)
    else:  # one number for all sides, or (rows, cols) each padded on both sides
        height, width = check_pair(pad, what, low=0)
        rows, cols = (height, height), (width, width)
    return c.g.pad(one(c, name, xs), (rows, cols), name)


def global_pooling(kind: str) -> Handler:
    """Return a handler for global average or max pooling."""

    def handler(c: KerasConverter, name: str, cfg: dict, xs: list[Tensor]) -> Tensor:
        return c.g.global_pool(one(c, name, xs), kind, bool(cfg.get("keepdims", False)), name)

    return handler


def pooling(kind: str) -> Handler:
    """Return a handler for windowed average or max pooling."""

    def handler(c: KerasConverter, name: str, cfg: dict, xs: list[Tensor]) -> Tensor:
        what = f"{c.source}: layer {name}"
        size = check_pair(cfg.get("pool_size", 2), f"{what} pool_size")
        strides = check_pair(cfg.get("strides") or list(size), f"{what} strides", high=MAX_WINDOW)
        padding = cfg.get("padding", "valid")
        if padding not in ("same", "valid"):
            raise ModelFileError(f"{what}: padding {padding!r} is not 'same' or 'valid'")
        return c.g.pool(one(c, name, xs), kind, size, strides, padding, name)

    return handler


def dense(c: KerasConverter, name: str, cfg: dict, xs: list[Tensor]) -> Tensor:
    x = one(c, name, xs)
    units = check_int(cfg.get("units"), f"{c.source}: layer {name} units", low=1)
    kernel = c.weights.take(name, ("kernel",), (x.channels, units))
    bias = c.weights.take(name, ("bias",), (units,)) if cfg.get("use_bias", True) else None
    return activate(c, c.g.dense(x, kernel, bias, name), cfg.get("activation"), name)


def identity(c: KerasConverter, name: str, cfg: dict, xs: list[Tensor]) -> Tensor:
    """Dropout and noise layers do nothing at inference."""
    return one(c, name, xs)


def flatten(c: KerasConverter, name: str, cfg: dict, xs: list[Tensor]) -> Tensor:
    return c.g.flatten(one(c, name, xs), name)


def reshape(c: KerasConverter, name: str, cfg: dict, xs: list[Tensor]) -> Tensor:
    target = cfg.get("target_shape")
    what = f"{c.source}: layer {name} target_shape"
    if not isinstance(target, list) or not 1 <= len(target) <= 3:
        raise ModelFileError(f"{what} must list one to three sizes, got {target!r}")
    sizes = [check_int(d, what, low=-1, high=1 << 25) for d in target]
    return c.g.reshape(one(c, name, xs), sizes, name)


def rescaling(c: KerasConverter, name: str, cfg: dict, xs: list[Tensor]) -> Tensor:
    x = one(c, name, xs)
    what = f"{c.source}: layer {name}"
    scale = number(cfg.get("scale", 1.0), f"{what} scale")
    offset = number(cfg.get("offset", 0.0), f"{what} offset")
    n = x.channels
    return c.g.scale_shift(x, np.full(n, scale, np.float32), np.full(n, offset, np.float32), name)


LAYERS: dict[str, Handler] = {
    "Conv2D": conv2d,
    "DepthwiseConv2D": depthwise_conv2d,
    "SeparableConv2D": separable_conv2d,
    "BatchNormalization": batch_normalization,
    "ReLU": relu,
    "LeakyReLU": leaky_relu,
    "Activation": activation,
    "Softmax": softmax,
    "Add": merge("Add"),
    "Multiply": merge("Mul"),
    "Average": merge("Mean"),
    "Maximum": merge("Max"),
    "Minimum": merge("Min"),
    "Subtract": subtract,
    "Concatenate": concatenate,
    "ZeroPadding2D": zero_padding2d,
    "GlobalAveragePooling2D": global_pooling("GlobalAveragePool"),
    "GlobalMaxPooling2D": global_pooling("GlobalMaxPool"),
    "AveragePooling2D": pooling("AveragePool"),
    "MaxPooling2D": pooling("MaxPool"),
    "Dense": dense,
    "Dropout": identity,
    "SpatialDropout2D": identity,
    "GaussianDropout": identity,
    "GaussianNoise": identity,
    "ActivityRegularization": identity,
    "Flatten": flatten,
    "Reshape": reshape,
    "Rescaling": rescaling,
}
