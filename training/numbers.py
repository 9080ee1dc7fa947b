"""Train the handwritten-digit CNN on MNIST; export models/numbers.keras, .onnx, its metrics and card.

    python -m training.numbers --data data/mnist/mnist.npz

`--data` is an .npz with x_train, y_train, x_test, y_test (uint8, white digits on black, the
key names of Keras's mnist.npz). With internet, `--data keras` fetches the same data through
`keras.datasets.mnist.load_data()`. `--extra gallery.zip` (repeatable) adds labelled drawings
exported by the gallery (`GET /images/export?model=numbers`).

Canvas drawings differ from MNIST in pen, slant and placement, so a share of every batch is
redrawn as a canvas (big, random pen width, rotation, shear) and brought back through the
serving preprocessing (`models.numbers.to_mnist`), so training sees what serving sees.
"""

from __future__ import annotations

import argparse
import base64
import csv
import datetime as dt
import json
import platform
import shutil
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from models.files import file_sha256
from models.numbers import SIZE, to_mnist
from models.runtime import ModelInputError
from training import cards, tf_setup
from training.digit_canvas import as_tensor, augment, render_canvas
from training.export import export_onnx, max_difference
from training.plots import confusion, plot_confusion, plot_curves

ROOT = Path(__file__).resolve().parent.parent
NAME = "numbers"


# ---------------------------------------------------------------------------- data


def display_path(path: Path) -> str:
    """Return a path relative to the project when it lies inside it (cards must not name a home folder)."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def load_mnist(data: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Load MNIST from an .npz file, or through keras.datasets when data is 'keras'."""
    if data == "keras":
        import keras

        (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    else:
        with np.load(data) as d:
            x_train, y_train, x_test, y_test = (d[k] for k in ("x_train", "y_train", "x_test", "y_test"))
    return x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64)


def load_extra(paths: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Load labelled gallery exports and bring each drawing through the serving preprocessing."""
    from PIL import Image

    from training.gallery_export import load_labelled_images

    xs, ys, skipped = [], [], 0
    for path in paths:
        for image, label in load_labelled_images(path):
            label = str(label).strip()
            if len(label) != 1 or not label.isdigit():
                skipped += 1
                continue
            if image.mode in ("RGBA", "LA", "P"):
                # Composite on white, as the image input does for a request.
                rgba = image.convert("RGBA")
                image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
            try:
                xs.append(to_mnist(np.asarray(image.convert("L"))))
            except ModelInputError:
                skipped += 1
                continue
            ys.append(int(label))
    print(f"extra: {len(xs)} labelled drawings from {len(paths)} export(s), {skipped} skipped", flush=True)
    empty = np.zeros((0, SIZE, SIZE), np.uint8)
    return (np.stack(xs) if xs else empty), np.asarray(ys, dtype=np.int64)


# ---------------------------------------------------------------------------- model


def build_model():
    """Build the compact CNN: three conv stages with BatchNorm, a small dense head, softmax."""
    import keras
    from keras import layers

    def conv(x, filters: int, kernel: int = 3):
        x = layers.Conv2D(filters, kernel, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        return layers.ReLU()(x)

    inputs = keras.Input((SIZE, SIZE, 1), name="digit")
    x = conv(inputs, 32, 5)
    x = layers.MaxPooling2D()(x)
    x = conv(x, 48)
    x = conv(x, 48)
    x = layers.MaxPooling2D()(x)
    x = conv(x, 96)
    x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dense(128, use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.Dropout(0.3)(x)
    outputs = layers.Dense(10, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="numbers")


def make_batches(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, augmented: bool):
    """Return a Keras PyDataset that shuffles and augments every epoch anew."""
    import keras

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            # One worker thread prepares the next batch while TensorFlow trains on this one.
            super().__init__(workers=1, use_multiprocessing=False)
            self.rng = np.random.default_rng(seed)
            self.order = self.rng.permutation(len(x))

        def __len__(self) -> int:
            return int(np.ceil(len(x) / batch_size))

        def __getitem__(self, index: int):
            idx = self.order[index * batch_size : (index + 1) * batch_size]
            batch = augment(x[idx], self.rng) if augmented else x[idx]
            return as_tensor(batch), y[idx]

        def on_epoch_end(self) -> None:
            self.order = self.rng.permutation(len(x))

    return Batches()


# ---------------------------------------------------------------------------- report


def read_history(path: Path) -> dict[str, list[float]]:
    """Read the per-epoch metrics that CSVLogger wrote, the last run of each epoch winning."""
    with open(path, newline="") as fh:
        rows = {int(row["epoch"]): row for row in csv.DictReader(fh)}
    ordered = [rows[e] for e in sorted(rows)]
    keys = ("loss", "accuracy", "val_loss", "val_accuracy", "seconds")
    return {k: [float(row[k]) for row in ordered] for k in keys}


def card_text(facts: dict) -> str:
    """Return the model card (Markdown) for a run's metrics."""
    return cards.render(NAME, facts)


# ---------------------------------------------------------------------------- fixtures


def write_fixtures(
    x_test: np.ndarray, y_test: np.ndarray, x_train, y_train, out: Path, seed: int = 7
) -> None:
    """Write the committed test fixtures: canvas-like PNG data URLs of test digits, a training sample."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for label in range(10):
        for index in np.flatnonzero(y_test == label)[:20]:
            side = int(rng.choice([280, 280, 280, 400]))
            canvas = render_canvas(
                x_test[index], rng, scale=8, side=side, solid=0.9, thickness=(-2, 3), tilt=8, fill=(0.35, 0.8)
            )
            if rng.random() < 0.5:
                # Transparent background, as a cleared browser canvas exports it.
                rgba = np.zeros((side, side, 4), np.uint8)
                rgba[..., 3] = 255 - canvas
                ok, png = cv2.imencode(".png", rgba)
                background = "transparent"
            else:
                ok, png = cv2.imencode(".png", canvas)
                background = "white"
            assert ok
            url = "data:image/png;base64," + base64.b64encode(png.tobytes()).decode()
            rows.append({"index": int(index), "label": int(label), "background": background, "image": url})
    (out / "canvas_digits.json").write_text(json.dumps(rows, indent=0))
    pick = rng.permutation(len(x_train))[:300]
    np.savez_compressed(
        out / "train_sample.npz",
        x_train=x_train[pick[:240]],
        y_train=y_train[pick[:240]].astype(np.uint8),
        x_test=x_train[pick[240:]],
        y_test=y_train[pick[240:]].astype(np.uint8),
    )
    print(f"fixtures: {len(rows)} canvas digits and a 240+60 training sample in {out}")


# ---------------------------------------------------------------------------- main


def train(args: argparse.Namespace) -> dict:
    """Train, evaluate, export and describe the model; return the measured facts."""
    import keras
    import tensorflow as tf

    class EpochTimer(keras.callbacks.Callback):
        """Add each epoch's wall time to its logs."""

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            if logs is not None:
                logs["seconds"] = time.perf_counter() - self.start

    # OpenCV's IPP paths and thread pool are slower than plain code on these tiny images.
    cv2.setNumThreads(1)
    cv2.ipp.setUseIPP(False)
    # Two cores are shared by everything on the build machine.
    tf_setup.configure(args.threads, args.seed)

    x_train, y_train, x_test, y_test = load_mnist(args.data)
    if args.limit:
        x_train, y_train = x_train[: args.limit], y_train[: args.limit]
        x_test, y_test = x_test[: args.limit], y_test[: args.limit]
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(x_train))
    n_val = min(args.val, len(x_train) // 5)
    x_val, y_val = x_train[order[:n_val]], y_train[order[:n_val]]
    x_fit, y_fit = x_train[order[n_val:]], y_train[order[n_val:]]
    n_extra = 0
    if args.extra:
        x_extra, y_extra = load_extra(args.extra)
        n_extra = len(x_extra)
        # Real drawings are few and precious: show each several times per epoch.
        x_fit = np.concatenate([x_fit] + [x_extra] * args.extra_repeat)
        y_fit = np.concatenate([y_fit] + [y_extra] * args.extra_repeat)

    batches = make_batches(x_fit, y_fit, args.batch, args.seed, augmented=not args.no_augment)
    steps = len(batches) * args.epochs
    warmup = min(len(batches), steps // 2)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=args.lr / 20,
        decay_steps=max(1, steps - warmup),
        alpha=0.01,
        warmup_target=args.lr,
        warmup_steps=warmup,
    )
    model = build_model()
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    # An interrupted run (a shared machine kills long jobs) resumes from its last finished
    # epoch when started again with the same command; the log keeps every epoch for the curves.
    backup = Path(args.out) / ".numbers-training"
    backup.mkdir(parents=True, exist_ok=True)
    log_path = backup / "history.csv"
    model.fit(
        batches,
        epochs=args.epochs,
        validation_data=(as_tensor(x_val), y_val),
        callbacks=[
            keras.callbacks.BackupAndRestore(str(backup / "state")),
            EpochTimer(),  # before the logger, which then writes each epoch's seconds too
            keras.callbacks.CSVLogger(str(log_path), append=True),
        ],
        verbose=2,
    )
    history = read_history(log_path)
    train_minutes = sum(history["seconds"]) / 60
    shutil.rmtree(backup, ignore_errors=True)

    probs = model.predict(as_tensor(x_test), batch_size=500, verbose=0)
    y_pred = probs.argmax(1)
    test_accuracy = float((y_pred == y_test).mean() * 100)
    matrix = confusion(y_test, y_pred, 10)
    per_class = 100 * np.diag(matrix) / np.maximum(matrix.sum(1), 1)
    errors = int((y_pred != y_test).sum())
    print(f"MNIST test accuracy: {test_accuracy:.2f}% ({errors} errors in {len(y_test)})", flush=True)

    # The same test digits as a person would draw them, through the serving preprocessing.
    canvas_rng = np.random.default_rng(args.seed + 1)
    redrawn = []
    for digit in x_test:
        try:
            redrawn.append(to_mnist(render_canvas(digit, canvas_rng, scale=10, side=280, solid=0.9, tilt=8)))
        except ModelInputError:
            redrawn.append(np.zeros((SIZE, SIZE), np.uint8))
    canvas_pred = model.predict(as_tensor(np.stack(redrawn)), batch_size=500, verbose=0).argmax(1)
    canvas_accuracy = float((canvas_pred == y_test).mean() * 100)
    print(f"canvas-redrawn test accuracy: {canvas_accuracy:.2f}%", flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    keras_path, onnx_path = out / f"{NAME}.keras", out / f"{NAME}.onnx"
    # Save a copy without the optimizer's state: a third of the size, and all serving needs.
    plain = build_model()
    plain.set_weights(model.get_weights())
    plain.save(keras_path)
    export_onnx(model, onnx_path)
    onnx_diff = max_difference(model, onnx_path, as_tensor(x_test[:1000]))
    print(f"ONNX vs Keras max abs difference: {onnx_diff:.2e}", flush=True)

    plot_confusion(
        matrix,
        [str(d) for d in range(10)],
        out / f"{NAME}_confusion.png",
        f"MNIST test: {test_accuracy:.2f}% ({errors} errors)",
        xlabel="predicted digit",
        ylabel="true digit",
    )
    plot_curves(history, out / f"{NAME}_curves.png")
    command = "python -m training.numbers " + " ".join(sys.argv[1:])
    facts = {
        "date": dt.date.today().isoformat(),
        "onnx": display_path(onnx_path),
        "data": "keras.datasets.mnist" if args.data == "keras" else args.data,
        "data_sha": "n/a" if args.data == "keras" else file_sha256(args.data),
        "n_train": len(x_fit) - n_extra * args.extra_repeat,
        "n_val": n_val,
        "n_extra": n_extra,
        "n_test": len(y_test),
        "command": command,
        "params": model.count_params(),
        "lr": args.lr,
        "batch": args.batch,
        "epochs": args.epochs,
        "train_minutes": train_minutes,
        "machine": f"{platform.machine()} CPU, {args.threads} TensorFlow threads (TF {tf.__version__})",
        "onnx_diff": onnx_diff,
        "test_accuracy": test_accuracy,
        "canvas_accuracy": canvas_accuracy,
        "per_class": per_class.tolist(),
        "errors": errors,
    }
    cards.write_metrics(out / f"{NAME}_metrics.json", facts)
    (out / f"{NAME}.md").write_text(card_text(facts), encoding="utf-8")
    print(f"wrote {keras_path}, {onnx_path}, {out / f'{NAME}.md'}, its metrics and the plots", flush=True)
    return facts


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", required=True, help="MNIST .npz (Keras key names), or 'keras' to download")
    parser.add_argument("--out", default=str(ROOT / "models"), help="folder for the model files and card")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    parser.add_argument("--val", type=int, default=5000, help="training digits held out for validation")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N train and test digits")
    parser.add_argument(
        "--extra", action="append", default=[], metavar="ZIP", help="gallery export (repeatable)"
    )
    parser.add_argument(
        "--extra-repeat", type=int, default=5, help="times each extra drawing is shown per epoch"
    )
    parser.add_argument("--no-augment", action="store_true", help="train on the digits as they are")
    parser.add_argument("--threads", type=int, default=2, help="TensorFlow intra-op threads")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--fixtures", metavar="DIR", help="write the test fixtures to DIR instead of training"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run the command line."""
    args = parse_args(argv)
    if args.fixtures:
        x_train, y_train, x_test, y_test = load_mnist(args.data)
        write_fixtures(x_test, y_test, x_train, y_train, Path(args.fixtures))
        return
    train(args)


if __name__ == "__main__":
    main()
