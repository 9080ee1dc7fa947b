r"""Serve a model in int8: ONNX Runtime's static quantization of its float ONNX file, measured side by side.

    python -m training.quantize doodles --data data/quickdraw/quickdraw_28.npz

The float file the training script exported (`models/doodles.onnx`) stays the source: it is what
the Keras model is checked against, and the int8 file is made from it again at any time. The int8
file (`models/doodles.int8.onnx`) carries the float file's metadata (version with `-int8` added),
and says how it was made in its own (`quantized`, `float_sha256`).

How: QDQ format, weights int8 per output channel, activations uint8 per tensor, ranges calibrated
(min-max) on training drawings only, never on held-out ones. Weights use 7 of their 8 bits
(`reduce_range`): on x86 CPUs without VNNI, ONNX Runtime's u8 x s8 kernels add pairs of products
in 16 bits, which can saturate with full-range weights; with 7-bit weights no sum can, so the
answers are the same on every x86 CPU, VNNI or not.

Kept only if the keep rule passes, fixed before any figure of the int8 file was read: on every set
measured (held-out bitmaps through the model alone; held-out bitmaps and canvases through the route;
the committed canvas fixtures; Google's own strokes as canvases), top-1 at most 0.3 points under the
float file's, and faster per drawing (ONNX Runtime on one thread, calls interleaved). The figures go
into the model's metrics JSON under "int8" and its card.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from training import cards
from training.export import set_metadata

ROOT = Path(__file__).resolve().parent.parent
# Most a quantized file's top-1 may fall under the float file's on any set, in points.
MAX_DROP = 0.3
CALIBRATION = 600  # training samples the activation ranges are measured on
CALIBRATION_SEED = 20261205
OPERATORS = ("Conv", "MatMul", "Gemm", "Relu", "MaxPool")


def quantize(source: Path, target: Path, calibration: np.ndarray, *, note: str) -> dict[str, Any]:
    """Write `source`'s int8 version to `target`, calibrated on `calibration` (N, ...) float32 inputs.

    Returns what was done: the settings, the sample count and the sizes of both files.
    """
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    name = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).get_inputs()[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.rows = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            row = next(self.rows, None)
            return None if row is None else {name: row[None].astype(np.float32)}

    with tempfile.TemporaryDirectory(prefix="quantize-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # Shape inference and graph folding first, as ONNX Runtime advises (no sympy: static shapes).
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(target),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            # The heavy operators only: what follows the last one (softmax, the mirror average)
            # stays in float, so a probability is not rounded to 1/255.
            op_types_to_quantize=list(OPERATORS),
        )
    float_meta = {p.key: p.value for p in onnx.load(str(source), load_external_data=False).metadata_props}
    proto = onnx.load(str(target))
    settings = (
        f"static QDQ on {', '.join(OPERATORS)}, int8 weights per channel (7-bit range), uint8 activations, "
        "min-max calibration; the rest in float"
    )
    metadata = {
        **{k: v for k, v in float_meta.items()},
        "version": float_meta.get("version", "float") + "-int8",
        "quantized": f"{settings}; {len(calibration)} {note}",
        "float_sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
    }
    set_metadata(proto, metadata, keep=False)
    onnx.save(proto, str(target))
    return {
        "settings": settings,
        "calibration": len(calibration),
        "calibration_note": note,
        "float_bytes": source.stat().st_size,
        "int8_bytes": target.stat().st_size,
        "version": metadata["version"],
        "onnxruntime": ort.__version__,
    }


def _top(probs: np.ndarray, y: np.ndarray) -> dict[str, float]:
    order = np.argsort(-probs, axis=1)
    return {
        "n": int(len(y)),
        "top1": float((order[:, 0] == y).mean()),
        "top3": float((order[:, :3] == y[:, None]).any(axis=1).mean()),
    }


def _folder_with(model: Path, models: Path, tmp: Path) -> Path:
    """A model folder as the doodle scripts read one: `model` as doodles.onnx beside the served labels and metrics."""
    folder = tmp / model.stem.replace(".", "-")
    folder.mkdir()
    shutil.copyfile(model, folder / "doodles.onnx")
    for name in ("doodles_labels.txt", "doodles_metrics.json"):
        shutil.copyfile(models / name, folder / name)
    return folder


def doodles(args: argparse.Namespace) -> dict[str, Any]:
    """Quantize the doodle classifier and measure both files on the same sets."""
    from training.doodle_data import load_data, stratified_split
    from training.doodle_strokes_eval import FIXTURE, load_records
    from training.doodle_strokes_eval import evaluate as strokes_evaluate
    from training.doodles import SEED
    from training.doodles_eval import (
        evaluate_fixtures,
        evaluate_split,
        make_client,
        side_by_side_ms,
    )
    from training.export import onnx_predict

    source, target = args.models / "doodles.onnx", args.models / "doodles.int8.onnx"
    x, y, names, _ = load_data(args.data, 5000)
    train, _, test = stratified_split(y, 0.10, 0.05, SEED)
    test = np.sort(test)
    rng = np.random.default_rng(CALIBRATION_SEED)
    picked = np.sort(rng.choice(train, min(args.calibration, len(train)), replace=False))
    made = quantize(
        source,
        target,
        x[picked].astype(np.float32)[..., None],
        note="drawings of the training split (quickdraw_28.npz)",
    )
    print(f"wrote {target}: {made['int8_bytes']:,} bytes (float {made['float_bytes']:,})", flush=True)

    figures: dict[str, Any] = {"made": made, "sets": {}}
    xt = x[test].astype(np.float32)[..., None]
    alone = {kind: onnx_predict(path, xt) for kind, path in (("float", source), ("int8", target))}
    figures["sets"]["held-out bitmaps, model alone"] = {k: _top(p, y[test]) for k, p in alone.items()}
    figures["agree_alone"] = float((alone["float"].argmax(1) == alone["int8"].argmax(1)).mean())
    figures["max_prob_diff"] = float(np.abs(alone["float"] - alone["int8"]).max())
    per_class = np.concatenate([test[y[test] == c][: args.per_class] for c in range(len(names))])
    records = load_records(FIXTURE)
    with tempfile.TemporaryDirectory(prefix="quantize-doodles-") as tmp:
        for kind, path in (("float", source), ("int8", target)):
            folder = _folder_with(path, args.models, Path(tmp))
            app, client = make_client(folder)
            model = app.extensions["registry"].models["doodles"]
            start = time.time()
            split = evaluate_split(client, model, x[per_class], y[per_class], names)
            fixtures = evaluate_fixtures(client, args.fixtures)
            strokes = strokes_evaluate(records, args.data, folder)["held_out"]
            sets = figures["sets"]
            sets.setdefault("held-out bitmaps, 28x28 PNGs through the route", {})[kind] = split["bitmap"]
            sets.setdefault("held-out drawings as canvases through the route", {})[kind] = {
                k: split["canvas"][k] for k in ("n", "top1", "top3")
            }
            sets.setdefault("canvas fixtures (tests/data/doodles)", {})[kind] = fixtures["canvas"]
            for condition, row in strokes["conditions"].items():
                sets.setdefault(f"Google's strokes held out, canvas {condition}", {})[kind] = {
                    "n": strokes["n"],
                    "top1": row["top1"],
                }
            print(f"{kind}: measured through the route in {time.time() - start:.0f} s", flush=True)
    ms_float, ms_int8 = side_by_side_ms([source, target], x[test][:200], args.calls)
    figures["ms"] = {"float": ms_float, "int8": ms_int8, "calls": args.calls}
    drops = {
        name: 100 * (row["float"]["top1"] - row["int8"]["top1"]) for name, row in figures["sets"].items()
    }
    figures["max_drop_points"] = max(drops.values())
    figures["passed"] = figures["max_drop_points"] <= MAX_DROP and ms_int8 < ms_float
    figures["rule"] = f"top-1 at most {MAX_DROP} points under the float file's on every set, and faster"
    figures["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    figures["command"] = f"python -m training.quantize doodles --data {os.path.relpath(args.data, ROOT)}"
    for name, row in figures["sets"].items():
        print(f"  {name}: float {row['float']['top1']:.4f}, int8 {row['int8']['top1']:.4f}")
    print(
        f"  ms per drawing: float {ms_float:.3f}, int8 {ms_int8:.3f}; largest drop "
        f"{figures['max_drop_points']:.2f} points: keep rule {'passed' if figures['passed'] else 'FAILED'}"
    )
    if not figures["passed"]:
        target.unlink()
        print(f"removed {target}: the float file stays served")
    if args.metrics:
        cards.store_figures(args.metrics, "int8", figures)
    return figures


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(prog="python -m training.quantize", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="model", required=True)
    d = sub.add_parser("doodles", help="the doodle classifier (models/doodles.onnx)")
    d.add_argument("--data", type=Path, required=True, help="quickdraw_28.npz, the training data")
    d.add_argument("--models", type=Path, default=ROOT / "models", help="folder of doodles.onnx")
    d.add_argument("--metrics", type=Path, default=ROOT / "models" / "doodles_metrics.json")
    d.add_argument("--fixtures", type=Path, default=ROOT / "tests" / "data" / "doodles")
    d.add_argument("--calibration", type=int, default=CALIBRATION, help="training drawings to calibrate on")
    d.add_argument(
        "--per-class", type=int, default=100, help="held-out drawings per class sent through the route"
    )
    d.add_argument("--calls", type=int, default=2000, help="timed calls per file")
    args = p.parse_args(argv)
    if args.metrics is not None and not str(args.metrics):
        args.metrics = None
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Quantize the named model and measure it against its float file."""
    import cv2

    cv2.setNumThreads(1)
    args = parse_args(argv)
    return {"doodles": doodles}[args.model](args)


if __name__ == "__main__":
    main()
