"""Train the nose-tip regressor on 96x96 gray face crops; export .keras, .onnx, its metrics and card.

Reproduce (about 15 min on 2 shared CPU cores):

    python -m training.tracking --data data/faces/faces_96.npz --points 68

`--points 10` regresses the nose tip and 9 other landmarks only (the model before); `--members N`
trains N nets from seeds counting up and exports one graph averaging them, and `--assemble`
averages nets trained by separate runs (the variants compared in the model card).

With `--evaluate-only` the committed model is re-measured without training: when its crop
calibration (ONNX metadata `crop_detector`) is not for the face detector models/tracking.py
serves, it is measured again and stamped into tracking.onnx's metadata (weights untouched).

Data: `faces_96.npz` (5,432 crops, 68 landmarks each) is built from the Udacity CVND
P1_Facial_Keypoints files (YouTube Faces frames, https://github.com/udacity/P1_Facial_Keypoints,
`data/training*`, `data/test*` and the two keypoint CSVs) and the 300-W HELEN train/test sets
(.jpg + .pts from https://ibug.doc.ic.ac.uk/resources/300-W/), cropped and resized as described
in that file's PROVENANCE.md. The keys used here are `images`, `landmarks68`, `source`, `names`.

Held-out split (identity-disjoint, fixed):
- the whole 300-W HELEN testset (source 3), which no training image shares;
- every Udacity image (train *and* test CSVs, which share all 347 identities) of the
  identities whose SHA-1 of the name is 0 mod 10 (about a tenth of them).
A validation split for monitoring only (1 mod 10 Udacity identities, 1 mod 10 HELEN-train
photos) is also kept out of training; the model card's figures come from the held-out split.

Model input: (N, 96, 96, 1) float32 gray values 0..255 (the model rescales itself), i.e. the
training crops as stored. Output: (N, K, 2) keypoints (x, y) in 96x96 pixel coordinates
(0-based pixel centres); keypoint 0 is the nose tip (landmark 30), K = 68 or 10 (`--points`).

Here: the command line and the training stages. The data, split and augmentation are in
tracking_data.py, the network in tracking_model.py, the measurements in tracking_eval.py, the
held-out report and card in tracking_report.py; the
card is training/cards/tracking.md.j2 filled from tracking_metrics.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import numpy as np

from training import tf_setup
from training.export import export_onnx
from training.tracking_data import (
    ALL_POINTS,
    KEYPOINTS,
    NOSE,
    augment,
    collection_split,
    flip_order,
    load_data,
    split_indices,
    write_fixtures,
)
from training.tracking_eval import (
    calibrate_detector,
    crop_metadata,
    error_table,
    member_records,
    previous_history,
)
from training.tracking_model import (
    build_ensemble,
    build_model,
    point_offset,
    predict_keras,
)
from training.tracking_report import card_text, evaluate_only, report  # noqa: F401 (card_text: cards.py)

ROOT = Path(__file__).resolve().parent.parent


def train(args: argparse.Namespace) -> dict:
    """Train, evaluate on the held-out split, export and write the card; return the results."""
    start = time.time()
    data = load_data(args.data)
    split = split_indices(data["names"], data["source"])
    if args.train_on != "all":
        split = collection_split(split, data["source"], args.train_on)
    if args.write_fixtures:
        write_fixtures(data, split["test"], args.write_fixtures)
        print(f"fixtures written to {args.write_fixtures}")
        return {}

    import keras
    import tensorflow as tf

    tf_setup.configure(args.threads, args.seed)
    for k, v in split.items():
        print(f"{k}: {len(v)} by source {np.bincount(data['source'][v], minlength=4).tolist()}", flush=True)
    train_idx = split["train"]
    if args.limit:
        train_idx = train_idx[: args.limit]
    images = data["images"]
    keypoints = ALL_POINTS if args.points == 68 else KEYPOINTS
    order = flip_order(keypoints)
    points = data["landmarks68"][:, list(keypoints)].astype(np.float32)
    x_val = images[split["val"]]

    # Nose tip weighs as much as the nine auxiliary points together.
    weights = np.full(len(keypoints), 1.0 / (len(keypoints) - 1), np.float32)
    weights[NOSE] = 1.0
    w = tf.constant(weights[None, :, None])

    def loss(y_true, y_pred):
        return tf.reduce_sum(tf.abs(y_true - y_pred) * w, axis=[1, 2]) / 2.0

    def run_stage(
        model,
        history: list,
        *,
        epochs: int,
        lr: float,
        strength: float,
        warmup: bool,
        seed: int,
        first: int,
        wild: bool,
    ):
        """Train `epochs` epochs with fresh augmentation each, cosine-decayed learning rate."""
        if epochs <= 0:
            return
        steps = epochs * int(np.ceil(len(train_idx) / args.batch))
        if warmup:
            schedule = keras.optimizers.schedules.CosineDecay(
                lr * 0.1, steps, warmup_target=lr, warmup_steps=min(300, steps // 10), alpha=0.01
            )
        else:
            schedule = keras.optimizers.schedules.CosineDecay(lr, steps, alpha=0.02)
        model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=1e-4), loss=loss)
        rng = np.random.default_rng(seed)
        for epoch in range(first, first + epochs):
            t0 = time.time()
            shuffled = rng.permutation(train_idx)
            x, y = augment(images[shuffled], points[shuffled], rng, strength=strength, order=order, wild=wild)
            hist = model.fit(x, y, batch_size=args.batch, epochs=1, verbose=0, shuffle=False)
            pred = predict_keras(model, x_val)[:, NOSE]
            table = error_table(pred, data, split["val"])["all"]
            history.append(
                {
                    "epoch": epoch + 1,
                    "loss": float(hist.history["loss"][-1]),
                    "val_px": table["mean_px"],
                    "val_norm": table["mean_norm"],
                }
            )
            print(
                f"epoch {epoch + 1} loss {history[-1]['loss']:.3f} val {table['mean_px']:.2f} px "
                f"{100 * table['mean_norm']:.2f} % IOD ({time.time() - t0:.0f} s, "
                f"total {(time.time() - start) / 60:.1f} min)",
                flush=True,
            )

    members, trained = [], []
    if args.assemble:
        # Members trained earlier by this script (separate runs): average them, train nothing.
        for path in args.assemble:
            members.append(keras.saving.load_model(path, compile=False))
            trained += member_records(path.with_suffix(".onnx"), path.with_suffix(".md"))
            print(f"member {path}: seed {trained[-1]['seed']}", flush=True)
    for k in range(0 if args.assemble else args.members):
        seed = args.seed + k
        t0 = time.time()
        keras.utils.set_random_seed(seed)
        record: dict = {"seed": seed, "history": []}
        if args.resume and k == 0:
            # Stage 1 done by an earlier run of this script: start from its model and training log.
            model = keras.saving.load_model(args.resume, compile=False)
            record["history"] = (previous_history(args.resume.with_suffix(".md")) or [[]])[0][: args.epochs]
            record["resumed"] = True
            print(f"resumed stage 1 from {args.resume} ({len(record['history'])} logged epochs)", flush=True)
        else:
            model = build_model(len(keypoints))
            print(f"member {k + 1}, seed {seed}, parameters: {model.count_params()}", flush=True)
            # Stage 1: full augmentation, warm-up then cosine decay.
            run_stage(
                model,
                record["history"],
                epochs=args.epochs,
                lr=args.lr,
                strength=1.0,
                warmup=True,
                seed=seed,
                first=0,
                wild=args.wild == "all",
            )
        # Stage 2: milder augmentation at a low learning rate, closer to clean held-out crops.
        run_stage(
            model,
            record["history"],
            epochs=args.fine_epochs,
            lr=args.fine_lr,
            strength=0.5,
            warmup=False,
            seed=seed + 1000,
            first=args.epochs,
            wild=args.wild in ("fine", "all"),
        )
        record["minutes"] = round((time.time() - t0) / 60, 1)
        members.append(model)
        trained.append(record)
    if args.assemble:  # the members' own keypoints
        keypoints = ALL_POINTS if members[0].output_shape[1] == len(ALL_POINTS) else KEYPOINTS
        order = flip_order(keypoints)
    model = build_ensemble(members)
    offset = point_offset(lambda a: predict_keras(model, a), data, train_idx, keypoints)
    print(f"point offset (pred - label on train, px): {offset.round(3).tolist()}", flush=True)

    out_dir = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    keras_path, onnx_path = out_dir / "tracking.keras", out_dir / "tracking.onnx"
    # build_ensemble made uncompiled copies: the optimizer state would triple the file.
    model.save(keras_path)
    calib = calibrate_detector(images[train_idx])
    print(f"detector calibration: {calib}", flush=True)
    version = dt.datetime.now().strftime("%Y%m%d-%H%M")
    export_onnx(
        model,
        onnx_path,
        {
            "version": f"tracking-{version}",
            "input": "float32 (N,96,96,1) gray 0..255",
            "output": f"float32 (N,{len(keypoints)},2) keypoints x,y in 96x96 pixel coordinates, 0 = nose tip",
            "keypoints": list(keypoints),
            "flip_order": order,
            **crop_metadata(calib),
            "point_offset": offset.round(4).tolist(),
            # How each member was trained (seed, minutes, training log), kept for the card.
            "members": trained,
            "recipe": {
                "epochs": args.epochs,
                "fine_epochs": args.fine_epochs,
                "assembled": bool(args.assemble),
                "wild": args.wild,
                "train_on": args.train_on,
            },
        },
    )
    if args.no_report:
        # Experiments compare recipes on validation; the held-out split is measured for the final model only.
        return {}
    return report(args, data, split, model, calib)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, required=True, help="faces_96.npz (see PROVENANCE.md)")
    p.add_argument("--out-dir", type=Path, default=ROOT / "models", help="where tracking.keras/.onnx go")
    p.add_argument(
        "--card",
        default=str(ROOT / "models" / "tracking.md"),
        help="model card path, its metrics beside it as <name>_metrics.json ('' to skip both)",
    )
    p.add_argument("--epochs", type=int, default=24, help="stage 1 epochs (full augmentation)")
    p.add_argument("--fine-epochs", type=int, default=8, help="stage 2 epochs (mild augmentation)")
    p.add_argument("--fine-lr", type=float, default=5e-4)
    p.add_argument(
        "--resume", type=Path, default=None, help="stage-1 .keras of an earlier run: run stage 2 only"
    )
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=1, help="seed of the first member (the next ones count up)")
    p.add_argument(
        "--points",
        type=int,
        choices=(10, 68),
        default=68,
        help="keypoints regressed: all 68 (the nose tip first) or 10 (nose + 9)",
    )
    p.add_argument(
        "--members",
        type=int,
        default=1,
        help="independently trained nets averaged in one graph (seeds count up)",
    )
    p.add_argument(
        "--assemble",
        type=Path,
        nargs="+",
        default=[],
        help="average these trained tracking.keras files (with their .onnx or .md beside) instead of training",
    )
    p.add_argument(
        "--wild",
        choices=("none", "fine", "all"),
        default="fine",
        help="in-the-wild augmentation (occluders, uneven light, stronger pose, motion blur): in stage 2 "
        "only (fine), in both stages (all) or none (the recipe before it)",
    )
    p.add_argument(
        "--train-on",
        choices=("all", "udacity", "helen"),
        default="all",
        help="train and validate on one collection only (leave-one-collection-out; the other is the test)",
    )
    p.add_argument("--threads", type=int, default=2, help="TensorFlow intra-op threads")
    p.add_argument("--limit", type=int, default=0, help="use only the first N training samples (smoke tests)")
    p.add_argument("--write-fixtures", type=Path, default=None, help="only write held-out test fixtures here")
    p.add_argument(
        "--no-report", action="store_true", help="train and export only: no held-out measurement, no card"
    )
    p.add_argument(
        "--evaluate-only",
        action="store_true",
        help="re-measure the exported model in --out-dir and rewrite the card (no training)",
    )
    args = p.parse_args(argv)
    args.card = Path(args.card) if args.card else None
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.evaluate_only:
        evaluate_only(args)
    else:
        train(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
