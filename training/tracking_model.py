"""The nose tracker's network: heatmaps read by soft-argmax, ensembles in one graph, flip averaging."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.export import keras_predict, onnx_predict
from training.tracking_data import FLIP_ORDER, KEYPOINTS, SIZE, flip_order

HEATMAP = 24  # soft-argmax grid: 4 input pixels per cell


def build_model(num_keypoints: int = len(KEYPOINTS), name: str = "nose_tracker"):
    """Build a small conv net whose heatmaps are turned into keypoints by soft-argmax."""
    import keras
    from keras import layers

    def conv(x, filters, stride=1):
        x = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        return layers.ReLU()(x)

    inp = keras.Input((SIZE, SIZE, 1), name="image")
    x = layers.Rescaling(1 / 127.5, offset=-1.0)(inp)
    x = layers.Conv2D(16, 5, strides=2, padding="same", use_bias=False)(x)  # 48x48
    x = layers.ReLU()(layers.BatchNormalization()(x))
    c24 = conv(conv(x, 48, 2), 48)  # 24x24
    c12 = conv(conv(conv(c24, 96, 2), 96), 96)  # 12x12
    c6 = conv(conv(conv(c12, 160, 2), 160), 160)  # 6x6
    # Top-down path back to 24x24 so the heatmap sees both context and fine position.
    u = layers.UpSampling2D(interpolation="bilinear")(layers.Conv2D(64, 1)(c6))
    u = conv(layers.Add()([u, layers.Conv2D(64, 1)(c12)]), 64)
    u = layers.UpSampling2D(interpolation="bilinear")(layers.Conv2D(32, 1)(u))
    u = conv(layers.Add()([u, layers.Conv2D(32, 1)(c24)]), 32)
    u = conv(u, 32)
    heat = layers.Conv2D(num_keypoints, 1, name="heatmap")(u)
    # Soft-argmax with standard layers only (no custom objects in the .keras file):
    # softmax over the 24x24 cells, then a fixed Dense whose kernel holds each cell's centre.
    prob = layers.Softmax(axis=1)(layers.Reshape((HEATMAP * HEATMAP, num_keypoints))(heat))
    prob = layers.Permute((2, 1))(prob)
    cell = SIZE / HEATMAP
    centres = (np.arange(HEATMAP, dtype=np.float32) + 0.5) * cell - 0.5
    gy, gx = np.meshgrid(centres, centres, indexing="ij")
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1)
    coords = layers.Dense(2, use_bias=False, trainable=False, name="soft_argmax")
    out = coords(prob)
    coords.set_weights([grid])
    return keras.Model(inp, out, name=name)


def build_ensemble(members: list):
    """Return one model averaging the keypoints of independently trained members (one ONNX graph).

    Each member is rebuilt under its own name (nested models must be uniquely named) and gets its
    weights copied, which also drops any optimizer state.
    """
    import keras
    from keras import layers

    copies = []
    for i, member in enumerate(members):
        name = "nose_tracker" if len(members) == 1 else f"member_{i + 1}"
        copy = build_model(member.output_shape[1], name=name)
        copy.set_weights(member.get_weights())
        copies.append(copy)
    if len(copies) == 1:
        return copies[0]
    inp = keras.Input((SIZE, SIZE, 1), name="image")
    out = layers.Average(name="average")([m(inp) for m in copies])
    return keras.Model(inp, out, name="nose_tracker_ensemble")


def ensemble_members(model) -> list:
    """Return the member networks of a model built by build_ensemble (the model itself when single)."""
    nested = [layer for layer in model.layers if layer.name.startswith("member_")]
    return nested or [model]


def predict_keras(model, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """Run the Keras model on uint8 crops (N, 96, 96), in batches."""
    return keras_predict(model, images[..., None], batch)


def predict_onnx(path: Path, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """Run the exported ONNX model on uint8 crops (N, 96, 96), in batches."""
    return onnx_predict(path, images[..., None], batch)


def with_flip(predict, images: np.ndarray, order: list[int] | None = None) -> np.ndarray:
    """Average a prediction with the mirrored prediction on the mirrored crops."""
    direct = predict(images)
    flipped = predict(np.ascontiguousarray(images[:, :, ::-1]))
    flipped[..., 0] = SIZE - 1 - flipped[..., 0]
    return (direct + flipped[:, FLIP_ORDER if order is None else order]) / 2


def point_offset(predict, data: dict, idx: np.ndarray, keypoints: tuple[int, ...] = KEYPOINTS) -> np.ndarray:
    """Return the mean (prediction - label) of each keypoint on training crops, flip-averaged.

    Flip augmentation forces the network to be mirror-symmetric, but the labels are not: the
    Udacity points sit about 0.8 px right of a mirror-symmetric position and the two sources
    place the nose tip about 0.8 px apart in y. The mean residual on the training split is
    subtracted when serving (ONNX metadata `point_offset`).
    """
    pred = with_flip(predict, data["images"][idx], flip_order(keypoints))
    labels = data["landmarks68"][idx][:, list(keypoints)]
    return (pred - labels).mean(axis=0).astype(np.float32)
