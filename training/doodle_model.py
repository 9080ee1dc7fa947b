"""The doodle CNN and its input pipeline: model, learning-rate schedule, augmentation, mirror averaging."""

from __future__ import annotations

import math
import time

import numpy as np

IMAGE_SIZE = 28
PEAK_LR = 2e-3
FINAL_LR = 4e-5


def unwrap(model):
    """Return the CNN inside a saved doodles model (the mirror-averaging wrapper holds it)."""
    import keras

    return next((layer for layer in model.layers if isinstance(layer, keras.Model)), model)


def build_model(n_classes: int, width: float = 1.0):
    """Build the CNN: three conv blocks with batch norm, then a small dense head; `width` scales every layer."""
    import keras
    from keras import layers

    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 1), name="image")
    # Pixels come in as 0..255 (white strokes on black), so serving feeds raw bitmaps.
    x = layers.Rescaling(1.0 / 255.0)(inputs)
    # One conv at 28x28, two at 14x14 and 7x7: the 7x7 pair is cheap (few positions) and lifted
    # held-out top-1 where one conv there left the net underfitting; the 28x28 stage stays single
    # because it would cost as much as the rest together.
    for block, (filters, convs) in enumerate(((32, 1), (64, 2), (128, 2)), start=1):
        for conv in range(1, convs + 1):
            x = layers.Conv2D(
                round(filters * width), 3, padding="same", use_bias=False, name=f"conv{block}_{conv}"
            )(x)
            x = layers.BatchNormalization(name=f"bn{block}_{conv}")(x)
            x = layers.ReLU()(x)
        x = layers.MaxPooling2D(name=f"pool{block}")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(round(256 * width), use_bias=False, name="fc")(x)
    x = layers.BatchNormalization(name="bn_fc")(x)
    x = layers.ReLU()(x)
    # Dropout only in the head: in the epochs the time budget allows the net underfits, not overfits.
    x = layers.Dropout(0.3)(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="doodles")


def budget_cosine(step_fraction: float, time_fraction: float, peak: float = PEAK_LR) -> float:
    """Return the learning rate after this fraction of the steps or of the time budget, whichever is further."""
    progress = min(1.0, max(step_fraction, time_fraction))
    return FINAL_LR + 0.5 * (peak - FINAL_LR) * (1.0 + math.cos(math.pi * progress))


def BudgetCosine(total_steps: int, start: float, budget_s: float, peak: float = PEAK_LR):  # noqa: N802
    """Return a callback that decays the learning rate on a cosine and stops when the time is up.

    The decay follows the steps or the wall time, whichever is further along, so a run on a busy
    machine still anneals fully within its time budget instead of being cut off at a high rate.
    """
    import keras

    class _BudgetCosine(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.step = 0

        def on_train_batch_begin(self, batch, logs=None):
            elapsed = (time.time() - start) / budget_s
            self.model.optimizer.learning_rate.assign(budget_cosine(self.step / total_steps, elapsed, peak))
            self.step += 1
            if elapsed >= 1.0 and not self.model.stop_training:
                print(f"\nstopping: time budget of {budget_s / 60:.0f} min reached")
                self.model.stop_training = True

    return _BudgetCosine()


def augment_batch(x, seed_pair=None):
    """Randomly flip, thicken/thin, rotate, scale and shift a batch of (B, 28, 28, 1) float bitmaps."""
    import tensorflow as tf

    b = tf.shape(x)[0]
    # Every class here is left/right symmetric in meaning (a horse facing left is still a horse).
    flip = tf.random.uniform((b, 1, 1, 1)) < 0.5
    x = tf.where(flip, tf.reverse(x, axis=[2]), x)
    # Stroke width: blend towards a 3x3 dilation (thicker) or erosion (thinner), because canvas
    # pens and the serving-side width normalisation never match the dataset exactly.
    dil = tf.nn.max_pool2d(x, 3, 1, "SAME")
    ero = -tf.nn.max_pool2d(-x, 3, 1, "SAME")
    t = tf.random.uniform((b, 1, 1, 1), -0.35, 0.5)
    x = tf.where(t > 0, x + t * (dil - x), x + (-t) * (ero - x))
    # Affine: rotation +-10 degrees, scale 0.9-1.05, shift +-1.5 px, about the image centre. Mild,
    # because serving already crops, centres and re-inks drawings the way the dataset looks.
    angle = tf.random.uniform((b,), -10.0, 10.0) * (math.pi / 180.0)
    scale = tf.random.uniform((b,), 0.90, 1.05)
    tx = tf.random.uniform((b,), -1.5, 1.5)
    ty = tf.random.uniform((b,), -1.5, 1.5)
    c = (IMAGE_SIZE - 1) / 2.0
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    # The transform maps output pixel coordinates to input coordinates (the inverse map).
    a0, a1 = cos, sin
    b0, b1 = -sin, cos
    a2 = c - a0 * (c + tx) - a1 * (c + ty)
    b2 = c - b0 * (c + tx) - b1 * (c + ty)
    zeros = tf.zeros_like(a0)
    transforms = tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
    x = tf.raw_ops.ImageProjectiveTransformV3(
        images=x,
        transforms=transforms,
        output_shape=tf.constant([IMAGE_SIZE, IMAGE_SIZE]),
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
        fill_value=0.0,
    )
    return tf.clip_by_value(x, 0.0, 255.0)


def make_dataset(
    x: np.ndarray,
    y: np.ndarray,
    w: np.ndarray | None,
    batch: int,
    *,
    train: bool,
    seed: int,
    canvas: np.ndarray | None = None,
    canvas_fraction: float = 0.0,
):
    """Build a tf.data pipeline; training batches are shuffled and augmented.

    With `canvas` (the same drawings through a canvas simulation and the served preprocessing),
    each training sample is taken from it with probability `canvas_fraction`, drawn anew every epoch.
    """
    import tensorflow as tf

    x = x.astype(np.float32)[..., None]
    parts = (x, y) if w is None else (x, y, w)
    if train and canvas is not None and canvas_fraction > 0:
        parts = (x, canvas.astype(np.float32)[..., None], *parts[1:])
    ds = tf.data.Dataset.from_tensor_slices(parts)
    if train:
        ds = ds.shuffle(len(y), seed=seed, reshuffle_each_iteration=True)
    if len(parts) > (2 if w is None else 3):

        def pick(raw, sim, *rest):
            use = tf.random.uniform(()) < canvas_fraction
            return (tf.where(use, sim, raw), *rest)

        ds = ds.map(pick, num_parallel_calls=1)
    ds = ds.batch(batch)
    if train:
        ds = ds.map(lambda xb, *rest: (augment_batch(xb), *rest), num_parallel_calls=1)
    return ds.prefetch(2)


def with_flip_average(model):
    """Wrap a trained model so it averages its outputs on the drawing and its mirror image.

    The mirror is a fixed matrix product (a plain Dense layer), so the file stays standard Keras
    and exports to ONNX as one MatMul.
    """
    import keras
    from keras import layers

    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 1), name="image")
    mirror = layers.Dense(IMAGE_SIZE, use_bias=False, trainable=False, name="mirror")
    across = layers.Permute((1, 3, 2))(inputs)  # (28, 1, 28): columns last
    flipped = layers.Permute((1, 3, 2))(mirror(across))
    mirror.set_weights([np.eye(IMAGE_SIZE, dtype=np.float32)[::-1]])
    outputs = layers.Average(name="probs")([model(inputs), model(flipped)])
    return keras.Model(inputs, outputs, name="doodles")
