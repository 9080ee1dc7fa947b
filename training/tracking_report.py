"""Measure the trained nose tracker on its held-out split and write its card (the report of training/tracking.py)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
from pathlib import Path

import numpy as np

from training import cards, tf_setup
from training.export import onnx_metadata, stamp_metadata
from training.tracking_data import NOSE, load_data, split_indices
from training.tracking_eval import (
    calibrate_detector,
    compare_view_sets,
    crop_metadata,
    current_detector_name,
    error_table,
    evaluate_served,
    member_records,
    perturbed_validation,
    served_crop_points,
)
from training.tracking_model import predict_keras, predict_onnx, with_flip

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "bench" / "tracking_peers.json"


def report(args, data: dict, split: dict, model, calib: dict) -> dict:
    """Measure the held-out error (Keras, ONNX, served pipeline) and write the model card."""
    onnx_path = args.out_dir / "tracking.onnx"
    test_idx = split["test"]
    x_test = data["images"][test_idx]
    keras_pred = predict_keras(model, x_test)
    onnx_pred = predict_onnx(onnx_path, x_test)
    meta = onnx_metadata(onnx_path)
    flip_pred = with_flip(lambda a: predict_onnx(onnx_path, a), x_test, json.loads(meta["flip_order"]))
    offset = np.array(json.loads(meta.get("point_offset", "0")), np.float32)
    results = {
        "keypoints": json.loads(meta["keypoints"]),
        "keras": error_table(keras_pred[:, NOSE], data, test_idx),
        "onnx": error_table(onnx_pred[:, NOSE], data, test_idx),
        "onnx_flip_raw": error_table(flip_pred[:, NOSE], data, test_idx),
        "onnx_flip": error_table((flip_pred - offset)[:, NOSE], data, test_idx),
        # The served crop regression: flip and 2-px shift views averaged, offset subtracted.
        "served_crops": error_table(served_crop_points(onnx_path, x_test), data, test_idx),
        # Candidate sets of shifted views, on validation only (which chooses).
        "view_sets": compare_view_sets(onnx_path, data, split),
        "val_perturbed": perturbed_validation(onnx_path, data, split),
        "point_offset_nose": [round(float(v), 3) for v in np.broadcast_to(offset, flip_pred.shape[1:])[NOSE]],
        "max_onnx_keras_px": float(np.abs(keras_pred - onnx_pred).max()),
        "served": evaluate_served(onnx_path, data, test_idx),
    }
    print(json.dumps(results, indent=1), flush=True)
    if args.card:
        from models.tracking import DEFAULT_CROP, SHIFTS

        facts = {
            "date": dt.date.today().isoformat(),
            "threads": args.threads,
            "recipe": {
                "epochs": args.epochs,
                "fine_epochs": args.fine_epochs,
                "lr": args.lr,
                "fine_lr": args.fine_lr,
                "assembled": bool(args.assemble),
                "wild": args.wild,
                # Extra stage-2 epochs run later from this model with --resume (see the card).
                "refine": getattr(args, "refine", None),
            },
            "sizes": {k: len(v) for k, v in split.items()},
            "params": model.count_params(),
            "calibration": calib,
            "members": member_records(onnx_path, args.card),
            # What serving did when these figures were measured (models/tracking.py).
            "served_shifts": SHIFTS,
            "default_crop": DEFAULT_CROP,
            "results": results,
            # Out-of-collection faces and MediaPipe, measured by python -m bench.tracking_peers.
            "peers": json.loads(PEERS.read_text()) if PEERS.is_file() else None,
        }
        cards.write_metrics(args.card.with_name(f"{args.card.stem}_metrics.json"), facts)
        args.card.write_text(card_text(facts), encoding="utf-8")
    print(f"done: {onnx_path}, card {args.card}", flush=True)
    return results


def card_text(facts: dict) -> str:
    """Return the model card for a run's metrics."""
    return cards.render("tracking", facts)


def evaluate_only(args: argparse.Namespace) -> dict:
    """Re-measure the exported model and rewrite its card, keeping the card's training log."""
    import keras

    tf_setup.configure(args.threads, args.seed)
    data = load_data(args.data)
    split = split_indices(data["names"], data["source"])
    model = keras.saving.load_model(args.out_dir / "tracking.keras", compile=False)
    onnx_path = args.out_dir / "tracking.onnx"
    meta = onnx_metadata(onnx_path)
    calib = json.loads(meta.get("calibration", "{}"))
    detector = current_detector_name()
    if meta.get("crop_detector") != detector or calib.get("detector") != detector:
        # Calibrated for another face detector (or not at all): the crop is deterministic and
        # needs no training, so measure it for the served detector and store it in the model.
        print(
            f"crop calibrated for {meta.get('crop_detector', 'an older detector')}; recalibrating", flush=True
        )
        calib = calibrate_detector(data["images"][split["train"]])
        print(f"detector calibration: {calib}", flush=True)
        stamp_metadata(onnx_path, crop_metadata(calib))
    # The card describes the run that trained the model, not this command's defaults.
    if "recipe" in meta:
        recipe = json.loads(meta["recipe"])
        args.epochs, args.fine_epochs = recipe["epochs"], recipe["fine_epochs"]
        args.wild = recipe.get("wild", "none")
        args.refine = recipe.get("refine")
        args.assemble = [Path("member.keras")] if recipe.get("assembled") else []
    else:  # exported before the recipe was stored: its card has it
        previous = args.card.read_text() if args.card and args.card.is_file() else ""
        epochs = re.search(r"(\d+) \+ (\d+) epochs", previous)
        if epochs:
            args.epochs, args.fine_epochs = int(epochs.group(1)), int(epochs.group(2))
    return report(args, data, split, model, calib)
