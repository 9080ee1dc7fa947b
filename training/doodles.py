r"""Train the doodle classifier (a small CNN) on Quick, Draw! 28x28 bitmaps and write its model card.

Run from the repository root:

    python -m training.doodles --data ../shared/data/quickdraw/quickdraw_28.npz

`--data` is an .npz with `x` (N, 28, 28) uint8 (white strokes on black), `y` (N,) class
indices and `class_names`; or a folder of Google's official `numpy_bitmap` files
(`<class>.npy`, N x 784 uint8), one file per class, which a user with internet fetches with

    mkdir -p data/quickdraw
    for c in airplane apple banana bicycle bird book boomerang bowtie car cat clock diamond dog \
             eye fish flower horse house "house plant" knife piano rainbow train tree; do
      curl -fLo "data/quickdraw/$c.npy" \
        "https://storage.googleapis.com/quickdraw_dataset/full/numpy_bitmap/${c// /%20}.npy"
    done
    python -m training.doodles --data data/quickdraw --per-class 4500

(the same 24 classes, CC BY 4.0, Google Creative Lab; about 2.5 GB, 100k-300k drawings per class,
so `--per-class` caps what is read; the shared npz holds the first 800-4500 rows of these same
files). Outputs, in `--out` (default `models/`): doodles.keras,
doodles.onnx, doodles_labels.txt, doodles_metrics.json, doodles.md (the model card, rendered from
those metrics), doodles_confusion.png and doodles_curves.png. `--fixtures DIR` also writes held-out test doodles for the test suite.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from training import cards, tf_setup
from training.export import export_onnx, max_difference
from training.plots import confusion, plot_confusion, plot_curves

SEED = 20240917
IMAGE_SIZE = 28
PEAK_LR = 2e-3
FINAL_LR = 4e-5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(prog="python -m training.doodles", description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="quickdraw_28.npz or a folder of <class>.npy")
    p.add_argument("--out", type=Path, default=Path("models"), help="output folder (default: models)")
    p.add_argument("--epochs", type=int, default=16, help="maximum epochs (early stopping on validation)")
    p.add_argument("--patience", type=int, default=4, help="early-stopping patience in epochs")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--limit", type=int, default=None, help="use at most N drawings per class (smoke tests)")
    p.add_argument("--per-class", type=int, default=5000, help="drawings read per class from .npy files")
    p.add_argument("--test-fraction", type=float, default=0.10, help="stratified held-out test split")
    p.add_argument("--val-fraction", type=float, default=0.05, help="validation split for early stopping")
    p.add_argument("--extra", type=Path, action="append", default=[], help="gallery export ZIP (repeatable)")
    p.add_argument("--fixtures", type=Path, default=None, help="write held-out test doodles to this folder")
    p.add_argument("--fixtures-per-class", type=int, default=15)
    p.add_argument("--fixtures-only", action="store_true", help="write --fixtures and stop, no training")
    p.add_argument("--threads", type=int, default=2, help="TensorFlow intra-op threads")
    p.add_argument(
        "--canvas-check",
        type=Path,
        default=Path("tests/data/doodles") if Path("tests/data/doodles/labels.csv").is_file() else None,
        help="held-out canvas PNGs + labels.csv to score through DoodleModel (default: tests/data/doodles)",
    )
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--max-minutes", type=float, default=45.0, help="training time budget (wall minutes)")
    return p.parse_args(argv)


def load_data(path: Path, per_class: int) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """Load (x uint8 N x 28 x 28, y int, class names, source row index) from an npz or .npy folder."""
    if path.is_dir():
        files = sorted(path.glob("*.npy"), key=lambda f: f.stem)  # "house" before "house plant"
        if not files:
            raise SystemExit(f"no <class>.npy files in {path}")
        xs, ys, src = [], [], []
        names = [f.stem for f in files]
        for label, f in enumerate(files):
            arr = np.load(f, mmap_mode="r")[:per_class]
            xs.append(np.asarray(arr, dtype=np.uint8).reshape(-1, IMAGE_SIZE, IMAGE_SIZE))
            ys.append(np.full(len(arr), label, dtype=np.int64))
            src.append(np.arange(len(arr), dtype=np.int64))
        return np.concatenate(xs), np.concatenate(ys), names, np.concatenate(src)
    with np.load(path) as d:
        x = d["x"].reshape(-1, IMAGE_SIZE, IMAGE_SIZE).astype(np.uint8)
        y = d["y"].astype(np.int64)
        names = [str(n) for n in d["class_names"]]
        src = d["src_index"].astype(np.int64) if "src_index" in d.files else np.arange(len(y))
    return x, y, names, src


def limit_per_class(y: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    """Return the indices of at most `limit` random samples of each class."""
    keep = [rng.permutation(np.flatnonzero(y == c))[:limit] for c in np.unique(y)]
    return np.sort(np.concatenate(keep))


def stratified_split(
    y: np.ndarray, test_fraction: float, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split indices into shuffled train / validation / test, the same fractions in every class."""
    rng = np.random.default_rng(seed)
    train, val, test = [], [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = max(1, round(len(idx) * test_fraction))
        n_val = max(1, round(len(idx) * val_fraction))
        test.append(idx[:n_test])
        val.append(idx[n_test : n_test + n_val])
        train.append(idx[n_test + n_val :])
    return tuple(rng.permutation(np.concatenate(part)) for part in (train, val, test))


def load_extra(paths: list[Path], names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Load gallery-labelled drawings and turn them into 28x28 bitmaps the way serving does."""
    from models.doodles import to_bitmap
    from training.gallery_export import load_labelled_images  # only needed with --extra

    index = {n: i for i, n in enumerate(names)}
    xs, ys, skipped = [], [], 0
    for path in paths:
        for image, label in load_labelled_images(path):
            if label not in index:
                skipped += 1
                continue
            gray = np.asarray(image.convert("L"), dtype=np.uint8)
            try:
                xs.append(to_bitmap(gray))
            except ValueError:  # an empty canvas carries no drawing
                skipped += 1
                continue
            ys.append(index[label])
    print(f"extra: {len(xs)} labelled drawings added to training, {skipped} skipped (unknown label or empty)")
    if not xs:
        return np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8), np.zeros(0, np.int64)
    return np.stack(xs).astype(np.uint8), np.asarray(ys, dtype=np.int64)


def class_weights(y: np.ndarray, n_classes: int, power: float = 0.5) -> dict[int, float]:
    """Return class weights proportional to n_class ** -power, averaging 1 over the samples.

    power=1 balances the classes fully; 0.5 (the default) gives an 800-drawing class 2.4x the
    weight of a 4500-drawing one instead of 5.6x, which lifts the small classes without making
    the model guess them whenever it is unsure (full balancing sent dogs to "horse").
    """
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    raw = np.maximum(counts, 1) ** -power
    raw *= len(y) / float(np.sum(counts * raw))
    return {i: float(w) for i, w in enumerate(raw)}


def build_model(n_classes: int):
    """Build the CNN: three conv blocks with batch norm, then a small dense head."""
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
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{block}_{conv}")(x)
            x = layers.BatchNormalization(name=f"bn{block}_{conv}")(x)
            x = layers.ReLU()(x)
        x = layers.MaxPooling2D(name=f"pool{block}")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(256, use_bias=False, name="fc")(x)
    x = layers.BatchNormalization(name="bn_fc")(x)
    x = layers.ReLU()(x)
    # Dropout only in the head: in the epochs the time budget allows the net underfits, not overfits.
    x = layers.Dropout(0.3)(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="doodles")


def budget_cosine(step_fraction: float, time_fraction: float) -> float:
    """Return the learning rate after this fraction of the steps or of the time budget, whichever is further."""
    progress = min(1.0, max(step_fraction, time_fraction))
    return FINAL_LR + 0.5 * (PEAK_LR - FINAL_LR) * (1.0 + math.cos(math.pi * progress))


def BudgetCosine(total_steps: int, start: float, budget_s: float):  # noqa: N802 - builds a Keras class
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
            self.model.optimizer.learning_rate.assign(budget_cosine(self.step / total_steps, elapsed))
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


def make_dataset(x: np.ndarray, y: np.ndarray, w: np.ndarray | None, batch: int, *, train: bool, seed: int):
    """Build a tf.data pipeline; training batches are shuffled and augmented."""
    import tensorflow as tf

    x = x.astype(np.float32)[..., None]
    parts = (x, y) if w is None else (x, y, w)
    ds = tf.data.Dataset.from_tensor_slices(parts)
    if train:
        ds = ds.shuffle(len(y), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch)
    if train:
        ds = ds.map(lambda xb, *rest: (augment_batch(xb), *rest), num_parallel_calls=1)
    return ds.prefetch(2)


def topk_accuracy(probs: np.ndarray, y: np.ndarray, k: int) -> float:
    """Return the fraction of rows whose true class is among the k most probable."""
    top = np.argsort(-probs, axis=1)[:, :k]
    return float(np.mean(np.any(top == y[:, None], axis=1)))


def write_fixtures(
    folder: Path, x: np.ndarray, y: np.ndarray, src: np.ndarray, names: list[str], per_class: int, seed: int
) -> int:
    """Write held-out doodles as a raw 28x28 npz and as canvas-like PNG renderings."""
    import cv2
    from PIL import Image

    from models.doodles import restroke

    rng = np.random.default_rng(seed + 1)
    pick = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:per_class] for c in range(len(names))])
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        folder / "doodles_28.npz",
        x=x[pick],
        y=y[pick].astype(np.uint8),
        src_index=src[pick].astype(np.int32),
        class_names=np.array(names),
    )
    canvas_dir = folder / "canvas"
    canvas_dir.mkdir(exist_ok=True)
    for old in canvas_dir.glob("*.png"):
        old.unlink()
    rows = ["file,label,canvas,pen_px,background"]
    for i, k in enumerate(pick):
        size = int(rng.choice([280, 400, 600]))
        side = int(size * rng.uniform(0.45, 0.9))
        # Redraw the bitmap's strokes with a canvas pen 8-20 px wide (anti-aliased, as a browser
        # canvas draws), keeping coloured-in areas filled.
        big = cv2.resize(x[k], (side, side), interpolation=cv2.INTER_CUBIC) > 100
        pen = float(rng.uniform(8.0, 20.0))
        ink = restroke(big, pen)
        ys, xs = np.nonzero(ink > 0)
        ink = np.rint(ink[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] * 255).astype(np.uint8)
        h, w = ink.shape
        canvas = np.zeros((size, size), np.uint8)
        top, left = int(rng.integers(0, size - h + 1)), int(rng.integers(0, size - w + 1))
        canvas[top : top + h, left : left + w] = ink
        name = f"{i:03d}_{names[y[k]].replace(' ', '_')}.png"
        if i % 3 == 2:  # black strokes on a transparent background, as a canvas toDataURL gives
            rgba = np.zeros((size, size, 4), np.uint8)
            rgba[..., 3] = canvas
            Image.fromarray(rgba, "RGBA").save(canvas_dir / name, optimize=True)
            background = "transparent"
        else:
            Image.fromarray(255 - canvas, "L").save(canvas_dir / name, optimize=True)
            background = "white"
        rows.append(f"canvas/{name},{names[y[k]]},{size},{pen:.1f},{background}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return len(pick)


def canvas_accuracy(folder: Path, out: Path, names: list[str]) -> dict | None:
    """Score the exported ONNX model through DoodleModel (serving preprocessing) on canvas PNGs."""
    import csv

    from PIL import Image

    from models.doodles import DoodleModel

    index = folder / "labels.csv"
    if not index.is_file():
        return None
    with open(index, encoding="utf-8", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["label"] in names]
    if not rows:
        return None
    model = DoodleModel("doodles", out / "doodles.onnx", labels=out / "doodles_labels.txt")
    top1 = top3 = 0
    for row in rows:
        # As the image module's gray(): transparency composited on white.
        image = Image.open(folder / row["file"]).convert("RGBA")
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        white.alpha_composite(image)
        result = model(np.asarray(white.convert("L")), top=3)
        top1 += result["label"] == row["label"]
        top3 += row["label"] in [t["label"] for t in result["top"]]
    return {"n": len(rows), "top1": top1 / len(rows), "top3": top3 / len(rows), "folder": str(folder)}


def card_text(results: dict) -> str:
    """Return the model card (Markdown) for a run's results."""
    return cards.render("doodles", results)


def main(argv: list[str] | None = None) -> dict:
    """Train, evaluate on the held-out split, export, and write the card; return the results."""
    args = parse_args(argv)
    start = time.time()
    x, y, names, src = load_data(args.data, args.per_class)
    rng = np.random.default_rng(args.seed)
    if args.limit:
        keep = limit_per_class(y, args.limit, rng)
        x, y, src = x[keep], y[keep], src[keep]
    n_classes = len(names)
    tr, va, te = stratified_split(y, args.test_fraction, args.val_fraction, args.seed)
    print(f"data: {len(y)} drawings, {n_classes} classes; train {len(tr)}, val {len(va)}, test {len(te)}")
    if args.fixtures:
        n = write_fixtures(args.fixtures, x[te], y[te], src[te], names, args.fixtures_per_class, args.seed)
        print(f"fixtures: {n} held-out doodles written to {args.fixtures}")
        if args.fixtures_only:
            return {"fixtures": n}

    import keras
    import tensorflow as tf

    tf_setup.configure(args.threads, args.seed)

    x_train, y_train = x[tr], y[tr]
    extra_note = ""
    if args.extra:
        ex, ey = load_extra(args.extra, names)
        x_train, y_train = np.concatenate([x_train, ex]), np.concatenate([y_train, ey])
        extra_note = (
            f"{len(ey)} gallery-labelled drawings from {', '.join(p.name for p in args.extra)} were added "
            "to the training split only (the held-out figures are on Quick, Draw! drawings)."
        )
    weights = class_weights(y_train, n_classes)
    w_train = np.array([weights[int(c)] for c in y_train], dtype=np.float32)

    model = build_model(n_classes)
    model.compile(
        optimizer=keras.optimizers.Adam(PEAK_LR),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.05),
        metrics=["accuracy"],
    )
    onehot = np.eye(n_classes, dtype=np.float32)
    train_ds = make_dataset(x_train, onehot[y_train], w_train, args.batch_size, train=True, seed=args.seed)
    val_ds = make_dataset(x[va], onehot[y[va]], None, 512, train=False, seed=args.seed)

    steps = int(np.ceil(len(y_train) / args.batch_size)) * args.epochs
    schedule = BudgetCosine(steps, start, args.max_minutes * 60)
    stopper = keras.callbacks.EarlyStopping(
        monitor="val_accuracy", patience=args.patience, restore_best_weights=True, verbose=1
    )
    history = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=args.epochs,
        callbacks=[schedule, stopper],
        shuffle=False,  # tf.data already reshuffles every epoch
        verbose=2,
    )
    hist = {k: [float(v) for v in vals] for k, vals in history.history.items()}
    best_epoch = int(np.argmax(hist["val_accuracy"])) + 1

    x_test = x[te].astype(np.float32)[..., None]
    probs = model.predict(x_test, batch_size=512, verbose=0)
    y_test = y[te]
    pred = probs.argmax(axis=1)
    cm = confusion(y_test, pred, n_classes)
    per_class = cm.diagonal() / np.maximum(cm.sum(axis=1), 1)
    off = cm.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None)[:8]
    top_confusions = [(names[i // n_classes], names[i % n_classes], int(off.flat[i])) for i in order]

    args.out.mkdir(parents=True, exist_ok=True)
    model.save(args.out / "doodles.keras")
    (args.out / "doodles_labels.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
    date = dt.date.today().isoformat()
    version = f"{date}-top1-{np.mean(pred == y_test):.4f}"
    check = x_test[:256]
    export_onnx(model, args.out / "doodles.onnx", {"version": version, "labels": "doodles_labels.txt"})
    onnx_diff = max_difference(model, args.out / "doodles.onnx", check)
    top1 = float(np.mean(pred == y_test))
    plot_confusion(cm, names, args.out / "doodles_confusion.png", f"held-out confusion (top-1 {top1:.3f})")
    plot_curves(hist, args.out / "doodles_curves.png", accuracy="top-1 accuracy")

    data_arg = os.path.relpath(args.data)
    command = "python -m training.doodles --data " + (data_arg if " " not in data_arg else f'"{data_arg}"')
    for flag, value, default in (
        ("--epochs", args.epochs, 12),
        ("--limit", args.limit, None),
        ("--seed", args.seed, SEED),
        ("--out", str(args.out), "models"),
    ):
        if value != default:
            command += f" {flag} {value}"
    command += "".join(f" --extra {p}" for p in args.extra)
    results = {
        "names": names,
        "date": date,
        "minutes": (time.time() - start) / 60,
        "machine": (
            f"{platform.machine()} CPU, {args.threads} TensorFlow threads, TF {tf.__version__}; "
            f"{os.cpu_count()} cores shared with other jobs, load average {os.getloadavg()[1]:.1f} at the end"
        ),
        "canvas": canvas_accuracy(args.canvas_check, args.out, names) if args.canvas_check else None,
        "epochs_run": len(hist["loss"]),
        "best_epoch": best_epoch,
        "version": version,
        "onnx_diff": onnx_diff,
        "onnx_check_n": len(check),
        "top1": top1,
        "top3": topk_accuracy(probs, y_test, 3),
        "balanced": float(per_class.mean()),
        "val_top1": float(max(hist["val_accuracy"])),
        "correct": int(np.sum(pred == y_test)),
        "n_test": len(te),
        "n_val": len(va),
        "n_train": len(y_train),
        "n_total": len(y),
        "counts": np.bincount(y, minlength=n_classes).tolist(),
        "test_counts": np.bincount(y_test, minlength=n_classes).tolist(),
        "per_class": per_class.tolist(),
        "top_confusions": top_confusions,
        "test_fraction": args.test_fraction,
        "val_fraction": args.val_fraction,
        "seed": args.seed,
        "data": args.data.name,
        "extra_note": extra_note,
        "batch": args.batch_size,
        "epochs": args.epochs,
        "patience": args.patience,
        "max_minutes": args.max_minutes,
        "command": command,
        "history": hist,
    }
    cards.write_metrics(args.out / "doodles_metrics.json", results)
    (args.out / "doodles.md").write_text(card_text(results), encoding="utf-8")
    print(
        f"held-out: top-1 {top1:.4f}, top-3 {results['top3']:.4f} on {len(te)} drawings; "
        f"onnx diff {onnx_diff:.2e}; {results['minutes']:.1f} min"
    )
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
