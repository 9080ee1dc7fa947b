"""Train the OCR glyph classifier on rendered lines; export models/ocr.keras, .onnx and its card.

    python -m training.ocr --data /usr/share/fonts

Set-up (Debian/Ubuntu): the fonts are the data, and Tesseract is a peer the card compares with.

    apt-get install fonts-ocr-b fonts-dejavu-core fonts-dejavu-extra fonts-liberation \\
        fonts-freefont-ttf fonts-noto-mono fonts-croscore fonts-crosextra-carlito fonts-go \\
        fonts-hack fonts-inconsolata fonts-jetbrains-mono fonts-courier-prime fonts-firacode \\
        fonts-mononoki fonts-league-mono fonts-fantasque-sans fonts-hermit fonts-anonymous-pro \\
        fonts-b612 fonts-open-sans fonts-roboto-unhinted fonts-3270 fonts-agave fonts-cantarell \\
        fonts-lato tesseract-ocr tesseract-ocr-eng

`--data` is the folder searched (recursively, by file name) for the fonts of
training/ocr_render.py (TRAIN_FONTS, CONTEXT_FONTS) and training/ocr_evalsets.py. Training lines
are rendered with OCR-B (the main font, most of the lines) and 39 other monospace and sans fonts
for robustness; the held-out and out-of-collection sets also use fonts never seen in training
(JetBrains Mono, Courier Prime Sans, Fira Code, mononoki). Every render is augmented and degraded
by a print/scan simulation: ink bleed or erosion, rotation up to +-5 degrees, 150-600 dpi, blur,
uneven lighting, low contrast, light or dark background, noise, JPEG; training/ocr_distort.py
adds other print cut by the band around the line, curved paper and perspective. `--lines DIR`
adds real labelled line images (`labels.tsv`: file<TAB>text, one line of text per image, `\\n`
between lines of a multi-line image).

Training glyphs are cut by `models.ocr_segment.segment`, the serving code itself, and a line is
used only when it cuts into as many glyphs as its text has characters, so train and serve agree;
glyphs of other print around the lines become the extra REJECT class. The card (rendered from
ocr_metrics.json) has per-character and whole-line accuracy on held-out renders
(training/ocr_eval.py) and on the out-of-collection sets (training/ocr_evalsets.py, scored once
after export), and the peer comparison (training/ocr_peers.py; `--no-bench` skips it, and
`python -m bench.ocr_vs_tesseract --card` adds it later).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from models.ocr import GLYPH_SIZE
from training import cards, tf_setup
from training.export import export_onnx, max_difference
from training.ocr_data import REJECT, build_dataset, glyphs_from_image, load_lines_dir, make_glyphs
from training.ocr_eval import evaluate, heldout_sets
from training.ocr_evalsets import evaluation_sets
from training.ocr_fixtures import write_fixtures

__all__ = [
    "REJECT",
    "build_model",
    "card_text",
    "glyphs_from_image",
    "load_lines_dir",
    "make_glyphs",
    "train",
]
from training.ocr_render import (
    CHARSET,
    CONTEXT_FONTS,
    HELDOUT_FONTS,
    TRAIN_FONTS,
    find_fonts,
)

ROOT = Path(__file__).resolve().parent.parent
NAME = "ocr"
# Convolution widths and hidden units: 16/32/64 and 128 until 2026-11; wider for the added fonts and
# distortions (5.5 M multiply-adds a glyph, about 3 ms of a 54-glyph line on one core).
WIDTHS, DENSE = (24, 48, 96), 192


# ---------------------------------------------------------------------------- model


def build_model(n_classes: int):
    """A small CNN over 32x32 glyph windows: three conv+pool stages, one hidden dense layer."""
    import keras
    from keras import layers

    inputs = keras.Input((GLYPH_SIZE, GLYPH_SIZE, 1), name="glyphs")
    x = inputs
    for width in WIDTHS:
        x = layers.Conv2D(width, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dense(DENSE, activation="relu")(x)
    x = layers.Dropout(0.3)(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="chars")(x)
    return keras.Model(inputs, outputs, name="ocr_glyphs")


def make_batches(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, weights: np.ndarray | None = None):
    """Shuffled batches of uint8 glyphs as float 0..1, shifted by up to a pixel (cutting jitter).

    `weights` (one per class) weigh each glyph's loss by its class; None weighs all alike.
    """
    import keras

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.rng = np.random.default_rng(seed)
            self.order = self.rng.permutation(len(x))

        def __len__(self) -> int:
            return int(math.ceil(len(x) / batch_size))

        def __getitem__(self, index: int):
            idx = np.sort(self.order[index * batch_size : (index + 1) * batch_size])
            xb = x[idx].astype(np.float32) * np.float32(1 / 255)
            dy, dx = self.rng.integers(-1, 2, 2)
            xb = np.roll(xb, (int(dy), int(dx)), axis=(1, 2))
            if weights is None:
                return xb[..., None], y[idx]
            return xb[..., None], y[idx], weights[y[idx]].astype(np.float32)

        def on_epoch_end(self) -> None:
            self.order = self.rng.permutation(len(x))

    return Batches()


def train(args: argparse.Namespace) -> dict:
    """Render, cut, train, export, evaluate and describe the model; return the measured facts."""
    import keras
    import tensorflow as tf

    cv2.setNumThreads(1)
    tf_setup.configure(args.threads, args.seed)
    find_fonts(args.data, list(TRAIN_FONTS) + list(HELDOUT_FONTS))  # fail early, naming what is missing

    wall = time.perf_counter()
    print(f"rendering {args.images} training images with {args.workers} worker(s)", flush=True)
    cache = Path(args.cache) if args.cache else None
    if cache is not None and cache.is_file():
        with np.load(cache) as saved:
            x, y, stats = saved["x"], saved["y"], json.loads(str(saved["stats"]))
        print(f"loaded {len(x)} rendered glyphs from {cache}", flush=True)
    else:
        x, y, stats = build_dataset(args.data, args.images, args.seed, args.workers)
        if cache is not None:
            np.savez(cache, x=x, y=y, stats=json.dumps(stats))
    n_real = 0
    if args.lines:
        for image, lines in load_lines_dir(Path(args.lines)):
            gx, gy, good = glyphs_from_image(image, lines)
            if gx:
                # Real glyphs are few and precious: repeat them.
                x = np.concatenate([x] + [(np.stack(gx) * 255).round().astype(np.uint8)] * args.lines_repeat)
                y = np.concatenate([y] + [np.asarray(gy, np.int64)] * args.lines_repeat)
                n_real += len(gx)
    render_minutes = (time.perf_counter() - wall) / 60
    print(
        f"{len(x)} glyphs from {stats['lines_cut_right']}/{stats['lines']} lines cut right "
        f"({render_minutes:.1f} min); {n_real} real glyphs",
        flush=True,
    )
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(x))
    n_val = max(1, len(x) // 20)
    x_val, y_val = x[order[:n_val]], y[order[:n_val]]
    x_fit, y_fit = x[order[n_val:]], y[order[n_val:]]

    class_weights = None
    if args.o_weight != 1.0:
        # The classifier learnt `0`'s prior: 9.2% of the glyphs against 0.33% for `O` (models/ocr.md).
        class_weights = np.ones(len(CHARSET) + 1, np.float32)
        class_weights[CHARSET.index("O")] = args.o_weight
    batches = make_batches(x_fit, y_fit, args.batch, args.seed, class_weights)
    steps = len(batches) * args.epochs
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=args.lr / 10,
        decay_steps=max(1, steps - len(batches) // 2),
        alpha=0.02,
        warmup_target=args.lr,
        warmup_steps=len(batches) // 2,
    )
    model = build_model(len(CHARSET) + 1)
    if args.init:
        # Fine-tuning: start from a trained model's weights (same architecture and charset).
        model.set_weights(keras.models.load_model(args.init, compile=False).get_weights())
        print(f"starting from the weights of {args.init}", flush=True)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    start = time.perf_counter()
    history = model.fit(
        batches,
        epochs=args.epochs,
        validation_data=(x_val[..., None].astype(np.float32) / 255, y_val),
        verbose=2,
    ).history
    train_minutes = (time.perf_counter() - start) / 60

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    keras_path, onnx_path = out / f"{NAME}.keras", out / f"{NAME}.onnx"
    plain = build_model(len(CHARSET) + 1)
    plain.set_weights(model.get_weights())
    plain.save(keras_path)
    version = f"{dt.date.today().isoformat()}-{args.seed}"
    export_onnx(model, onnx_path, {"charset": CHARSET, "reject": "1", "version": version})
    (out / f"{NAME}_charset.txt").write_text(CHARSET + "\n", encoding="utf-8")
    onnx_diff = max_difference(model, onnx_path, x_val[:512, ..., None].astype(np.float32) / 255)
    val_accuracy = float(history["val_accuracy"][-1] * 100)
    print(f"validation glyph accuracy {val_accuracy:.2f}%, ONNX vs Keras {onnx_diff:.1e}", flush=True)

    heldout: dict = {}
    collections: dict = {}
    if not args.no_eval:
        print("evaluating on held-out renders", flush=True)
        sets = heldout_sets(args.data, n=args.heldout, seed=args.seed + 7919)
        heldout = evaluate(onnx_path, sets)
        # Scored once, after export: nothing above reads these sets (see training/ocr_evalsets.py).
        print("evaluating on the out-of-collection sets", flush=True)
        collections = evaluate(onnx_path, evaluation_sets(args.data, n=args.heldout))
    bench = None
    if not args.no_bench and not args.no_eval:
        from bench.ocr_vs_tesseract import PEER_SETS
        from training.ocr_peers import compare

        print("reading the same lines with the peers (Tesseract, RapidOCR where installed)", flush=True)
        chosen = [s for s in sets if s.name in PEER_SETS]
        bench = compare(onnx_path, chosen + evaluation_sets(args.data, n=args.heldout))
    facts = {
        "date": dt.date.today().isoformat(),
        "command": "python -m training.ocr " + " ".join(sys.argv[1:]),
        "data": args.data,
        "fonts": {
            n: str(p) for n, p in find_fonts(args.data, list(TRAIN_FONTS) + list(HELDOUT_FONTS)).items()
        },
        "images": args.images,
        "init": args.init,
        "o_weight": args.o_weight,
        "glyphs": len(x),
        "n_real": n_real,
        "cut_stats": stats,
        "n_val": n_val,
        "params": model.count_params(),
        "epochs": args.epochs,
        "batch": args.batch,
        "lr": args.lr,
        "render_minutes": render_minutes,
        "train_minutes": train_minutes,
        "total_minutes": (time.perf_counter() - wall) / 60,
        "machine": f"{platform.machine()} CPU, {args.threads} TensorFlow threads (TF {tf.__version__}), "
        f"{args.workers} render worker(s)",
        "val_accuracy": val_accuracy,
        "onnx_diff": onnx_diff,
        "heldout": heldout,
        "collections": collections,
        "bench": bench,
        "version": version,
        "history": {k: [float(v) for v in vals] for k, vals in history.items()},
        "charset": CHARSET,
        "train_fonts": TRAIN_FONTS,
        "context_fonts": list(CONTEXT_FONTS),
        "reject": True,
        "widths": "/".join(map(str, WIDTHS)),
        "dense": DENSE,
    }
    cards.write_metrics(out / f"{NAME}_metrics.json", facts)
    (out / f"{NAME}.md").write_text(card_text(facts), encoding="utf-8")
    print(f"wrote {keras_path}, {onnx_path}, {out / f'{NAME}.md'}", flush=True)
    return facts


# ---------------------------------------------------------------------------- card


def card_text(facts: dict) -> str:
    """Return the model card for a run's metrics (what older metrics lack comes from the code)."""
    charset = facts.get("charset", CHARSET)
    lowest: dict[str, float] = {}
    for row in [*facts["heldout"].values(), *facts.get("collections", {}).values()]:
        for char, accuracy in row["per_class"].items():
            lowest[char] = min(accuracy, lowest.get(char, accuracy))
    per_char = sorted(lowest.items(), key=lambda kv: charset.index(kv[0]))
    defaults = {
        "charset": charset,
        "train_fonts": TRAIN_FONTS,
        "context_fonts": list(CONTEXT_FONTS),
        "reject": True,
        "widths": "/".join(map(str, WIDTHS)),
        "dense": DENSE,
        "collections": {},
    }
    return cards.render(NAME, {**defaults, **facts}, per_char=per_char)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", default="/usr/share/fonts", help="folder holding the fonts (searched recursively)"
    )
    parser.add_argument("--out", default=str(ROOT / "models"), help="folder for the model files and card")
    parser.add_argument("--images", type=int, default=6000, help="training images to render")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    parser.add_argument("--heldout", type=int, default=200, help="lines per held-out set")
    parser.add_argument("--lines", metavar="DIR", help="real labelled line images (labels.tsv)")
    parser.add_argument(
        "--lines-repeat", type=int, default=20, help="times each real glyph is shown per epoch"
    )
    parser.add_argument("--threads", type=int, default=2, help="TensorFlow intra-op threads")
    parser.add_argument("--workers", type=int, default=2, help="render processes")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-bench", action="store_true", help="skip the Tesseract comparison")
    parser.add_argument("--init", metavar="KERAS", help="start from this model's weights (fine-tuning)")
    parser.add_argument(
        "--o-weight", type=float, default=1.0, help="weight of the letter O's glyphs in the loss (1: as any)"
    )
    parser.add_argument(
        "--no-eval",
        action="store_true",
        help="skip the held-out and out-of-collection scoring (compare on training.ocr_eval's dev sets "
        "first, then score the chosen model once with --rescore)",
    )
    parser.add_argument(
        "--cache", metavar="NPZ", help="keep the rendered glyphs here and reuse them on the next run"
    )
    parser.add_argument(
        "--rescore",
        action="store_true",
        help="score the model in --out again with the current serving code (no training)",
    )
    parser.add_argument(
        "--fixtures", metavar="DIR", help="write the test fixtures to DIR instead of training"
    )
    return parser.parse_args(argv)


def rescore(args: argparse.Namespace) -> dict:
    """Score the exported model again with the current serving code (segmentation and decoding)."""
    cv2.setNumThreads(1)
    out = Path(args.out)
    metrics = out / f"{NAME}_metrics.json"
    facts = json.loads(metrics.read_text(encoding="utf-8"))
    onnx_path = out / f"{NAME}.onnx"
    facts["heldout"] = evaluate(onnx_path, heldout_sets(args.data, n=args.heldout, seed=args.seed + 7919))
    facts["collections"] = evaluate(onnx_path, evaluation_sets(args.data, n=args.heldout))
    facts["rescore_command"] = "python -m training.ocr " + " ".join(sys.argv[1:])
    cards.write_metrics(metrics, facts)
    (out / f"{NAME}.md").write_text(card_text(facts), encoding="utf-8")
    print(f"rescored {onnx_path}; wrote {metrics} and {out / f'{NAME}.md'}", flush=True)
    return facts


def main(argv: list[str] | None = None) -> None:
    """Run the command line."""
    args = parse_args(argv)
    if args.rescore:
        rescore(args)
        return
    if args.fixtures:
        write_fixtures(args.data, Path(args.fixtures))
        return
    train(args)


if __name__ == "__main__":
    main()
