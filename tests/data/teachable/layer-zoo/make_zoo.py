"""Write keras_model.h5 + expected.npz: a small Keras 2 model using every layer type the converter handles.

Run with tf_keras 2.21 on TensorFlow (pip install --target DIR --no-deps tf-keras==2.21.0):
    PYTHONPATH=DIR python tests/data/teachable/layer-zoo/make_zoo.py
The weights are random (seeded); expected.npz holds two inputs and tf_keras's outputs for them.
"""

import os
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tf_keras as keras  # noqa: E402
from tf_keras import layers as L  # noqa: E402, N812

HERE = Path(__file__).parent


def build() -> keras.Model:
    """A functional model nested in a Sequential, as Teachable Machine nests its MobileNet."""
    inp = keras.Input((32, 40, 3))
    x = L.Rescaling(1 / 2.0, offset=0.25)(inp)
    x = L.ZeroPadding2D(((1, 2), (0, 1)))(x)
    x = L.Conv2D(8, 3, strides=2, padding="valid", activation="relu")(x)
    a = L.SeparableConv2D(6, 3, padding="same", depth_multiplier=2, activation="tanh")(x)
    b = L.DepthwiseConv2D(3, padding="same", dilation_rate=2)(x)
    b = L.BatchNormalization(center=False)(b)
    b = L.LeakyReLU(alpha=0.1)(b)
    b = L.Conv2D(6, 1, groups=2, use_bias=False)(b)
    merged = [L.Add()([a, b]), L.Multiply()([a, b]), L.Maximum()([a, b]), L.Minimum()([a, b])]
    merged += [L.Average()([a, b]), L.Subtract()([a, b])]
    c = L.Concatenate()(merged)
    c = L.ReLU(max_value=4.0, negative_slope=0.05)(c)
    p = L.MaxPooling2D(2)(c)
    q = L.AveragePooling2D(3, strides=2, padding="same")(c)
    q = L.Activation("sigmoid")(q)
    q = L.Dense(5, activation="softplus")(q)  # Dense on an image: along the channels
    g1 = L.GlobalMaxPooling2D()(p)
    g2 = L.Dense(5, activation="swish")(L.Flatten()(q))
    r = L.Reshape((-1, 12))(p)
    r = L.Flatten()(L.Dense(3, activation="selu")(r))
    s = L.Flatten()(L.SpatialDropout2D(0.1)(L.Reshape((1, 5, 1))(g2)))
    g3 = L.GlobalAveragePooling2D()(c)
    h = L.Concatenate()([L.Dense(4, activation="elu")(g1), g2, s, r, g3])
    h = L.GaussianNoise(0.3)(L.Dropout(0.5)(h))
    h = L.Dense(6, activation="hard_sigmoid")(h)
    features = keras.Model(inp, h, name="features")
    head = keras.Sequential([L.Dense(4), L.Softmax()], name="head")
    return keras.Sequential([features, head], name="zoo")


def main() -> None:
    model = build()
    rng = np.random.default_rng(0)
    for w in model.weights:
        value = rng.normal(0, 0.5, w.shape) + (1.0 if "variance" in w.name else 0.0)
        w.assign(np.abs(value) if "variance" in w.name else value)
    model.save(HERE / "keras_model.h5")
    (HERE / "labels.txt").write_text("0 a\n1 b\n2 c\n3 d\n", encoding="utf-8")
    x = rng.uniform(-1, 1, (2, 32, 40, 3)).astype(np.float32)
    np.savez_compressed(HERE / "expected.npz", x=x, y=model(x, training=False).numpy())
    print(model.summary())


if __name__ == "__main__":
    main()
