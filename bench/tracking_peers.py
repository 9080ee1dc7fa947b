"""The nose tracker against MediaPipe Face Mesh, side by side, in and out of the training collections.

Reproduce (MediaPipe installs itself into bench/peers/.venv-mediapipe from bench/peers/mediapipe.txt
on the first run; everything runs offline):

    python -m bench.tracking_peers --data data/faces/faces_96.npz \\
        --loco udacity=build/tracking/loco-udacity/tracking.onnx \\
        --loco helen=build/tracking/loco-helen/tracking.onnx

Face sets (96x96 gray crops with 68 iBUG landmarks; error = nose-tip distance / outer-eye-corner
distance):
- `heldout`: the served model's identity-disjoint held-out split (in-distribution);
- `helen`: every 300-W HELEN face (Flickr, in the wild): out of collection for a model trained on
  Udacity/YouTube Faces only (`python -m training.tracking --train-on udacity`);
- `udacity`: every Udacity/YouTube Faces frame: out of collection for a model trained on HELEN only;
- `external`: faces annotated by others and shipped in packages (training/tracking_external.py),
  from no training collection.
Ours runs through the served path (models/tracking.py, ONNX, flip-averaged), with `detect: false`
and with detection; MediaPipe gives landmark 4 on the crop at 96 px and upscaled to 192 px. Each
figure is over the faces answered, with the share answered beside it. A leave-one-collection-out
model is shown only on faces of the collection it never saw (and `external`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import venvs
from training.tracking_data import COLLECTIONS, interocular, load_data, split_indices
from training.tracking_external import load_external

ROOT = Path(__file__).resolve().parent.parent
PEER = ROOT / "bench" / "peers"
VENV = PEER / ".venv-mediapipe"
PINS = PEER / "mediapipe.txt"
RESULTS = ROOT / "bench" / "tracking_peers.json"
CACHE = ROOT / "bench" / "results" / "tracking_mediapipe"
SIZES = (96, 192)
TIMED = 300  # crops timed per configuration (CPU ms per face)


def ensure_mediapipe() -> Path:
    """Create bench/peers/.venv-mediapipe from the pins (once); return its python."""
    # --no-deps: the pins list every package; mediapipe's own metadata would pull in extras.
    return venvs.ensure(VENV, PINS, label="MediaPipe", pip_args=("--no-deps",))


def mediapipe_points(images: np.ndarray) -> dict:
    """Run Face Mesh on the crops in its own venv (cached by content); return its JSON answer."""
    key = hashlib.sha256(images.tobytes() + PINS.read_bytes()).hexdigest()[:16]
    cached = CACHE / f"{key}.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    python = ensure_mediapipe()
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        crops = Path(tmp) / "crops.npy"
        np.save(crops, images)
        subprocess.run(
            [str(python), str(ROOT / "bench" / "tracking_mediapipe.py"), str(crops), str(cached)]
            + ["--sizes", *map(str, SIZES)],
            check=True,
            stderr=subprocess.DEVNULL,  # MediaPipe's start-up logging
        )
    return json.loads(cached.read_text())


def face_sets(data_path: Path) -> tuple[dict, dict]:
    """Return every face (faces_96.npz then the external ones) and each set's indices into them."""
    data = load_data(data_path)
    external = load_external()
    n = len(data["images"])
    split = split_indices(data["names"], data["source"])
    faces = {
        "images": np.concatenate([data["images"], external["images"]]),
        "landmarks68": np.concatenate([data["landmarks68"], external["landmarks68"]]),
        "source": np.concatenate([data["source"], np.full(len(external["images"]), 9, np.uint8)]),
    }
    sets = {
        "heldout": split["test"],
        "helen": np.flatnonzero(np.isin(data["source"], COLLECTIONS["helen"])),
        "udacity": np.flatnonzero(np.isin(data["source"], COLLECTIONS["udacity"])),
        "external": np.arange(n, len(faces["images"])),
        # Offsets of MediaPipe's landmark 4 from the iBUG nose tip are fitted on validation faces only.
        "val_helen": split["val"][np.isin(data["source"][split["val"]], COLLECTIONS["helen"])],
        "val_udacity": split["val"][np.isin(data["source"][split["val"]], COLLECTIONS["udacity"])],
        "val": split["val"],
    }
    return faces, sets


def summary(errors: np.ndarray, n: int) -> dict:
    """Mean and p90 of the normalised errors answered, and the share answered."""
    if len(errors) == 0:
        return {"n": n, "answered": 0.0, "mean": float("nan"), "p90": float("nan")}
    return {
        "n": n,
        "answered": round(len(errors) / n, 4),
        "mean": round(float(np.mean(errors)), 5),
        "p90": round(float(np.percentile(errors, 90)), 5),
    }


def our_points(onnx: Path, images: np.ndarray, detect: bool) -> np.ndarray:
    """Nose tips (96x96 pixel centres, NaN when no face) through the served model, one call per crop."""
    from models.tracking import SIZE, NoseModel

    model = NoseModel("tracking", onnx)
    model.warmup()
    out = np.full((len(images), 2), np.nan)
    for i, crop in enumerate(images):
        r = model(crop, detect=detect)
        if r["found"]:
            out[i] = (r["x"] * SIZE - 0.5, r["y"] * SIZE - 0.5)
    return out


def our_cost(onnx: Path, images: np.ndarray, detect: bool) -> float:
    """CPU ms per crop of the served call (1 ONNX thread, time.process_time)."""
    from models.tracking import NoseModel

    model = NoseModel("tracking", onnx, threads=1)
    model.warmup()
    crops = images[:TIMED]
    t0 = time.process_time()
    for crop in crops:
        model(crop, detect=detect)
    return 1000 * (time.process_time() - t0) / len(crops)


def detector_points(images: np.ndarray) -> tuple[np.ndarray, float]:
    """Nose tips from the served face detector's own keypoint (BlazeFace's nose_tip) and its CPU ms per crop.

    Each crop is padded with black to twice its side, so the face has the size it has in a frame
    (as the crop calibration does, training.tracking_eval.calibrate_crop); the largest face's
    keypoint is taken. The detector is trained by Google on its own faces: a peer, not ours.
    """
    import cv2

    from models.face_detector import KEYPOINTS, FaceDetector
    from models.tracking import DETECTOR

    detector = FaceDetector(DETECTOR, threads=1)
    nose = KEYPOINTS.index("nose_tip")
    pad = images.shape[1] // 2
    out = np.full((len(images), 2), np.nan)
    t0 = time.process_time()
    for i, crop in enumerate(images):
        faces = detector.detect(cv2.copyMakeBorder(crop, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0))
        if faces:
            out[i] = faces[0].keypoints[nose] - pad - 0.5  # edges -> pixel centres, crop coordinates
    return out, 1000 * (time.process_time() - t0) / max(len(images), 1)


def errors_of(points: np.ndarray, faces: dict, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normalised error of each face (NaN when unanswered) and the answered mask."""
    lm = faces["landmarks68"][idx]
    err = np.linalg.norm(points[idx] - lm[:, 30], axis=1) / interocular(lm)
    return err, ~np.isnan(err)


ALIGN = {"helen": "val_helen", "udacity": "val_udacity", "heldout": "val", "external": "val"}


def measure(args: argparse.Namespace) -> dict:
    """Measure every system on every set it has not been trained on (and ours in distribution)."""
    faces, sets = face_sets(args.data)
    images = faces["images"]
    mp = mediapipe_points(images)
    systems: dict[str, dict] = {}
    for size in SIZES:
        answer = mp["sizes"][str(size)]
        points = np.array([p if p is not None else (np.nan, np.nan) for p in answer["points"]], float)
        systems[f"mediapipe_{size}"] = {"points": points, "cpu_ms": answer["cpu_ms"], "trained_on": "other"}
    points, cpu_ms = detector_points(images)
    systems["blazeface_nose"] = {"points": points, "cpu_ms": cpu_ms, "trained_on": "other"}
    ours = {"served": (args.ours, "all")} | {k: (v, k) for k, v in args.loco.items()}
    for name, (onnx, trained_on) in ours.items():
        todo = ["heldout", "external"] if trained_on == "all" else [c for c in COLLECTIONS if c != trained_on]
        todo += ["external"] if trained_on != "all" else []
        wanted = np.unique(np.concatenate([sets[s] for s in todo] + [sets[ALIGN[s]] for s in todo]))
        for detect in (False, True):
            points = np.full((len(images), 2), np.nan)
            points[wanted] = our_points(onnx, images[wanted], detect)
            systems[f"{name}_{'detect' if detect else 'crop'}"] = {
                "points": points,
                "cpu_ms": our_cost(onnx, images[sets["heldout"]], detect),
                "trained_on": trained_on,
                "sets": sorted(set(todo)),
                "model": str(onnx),
            }
    table = []
    for set_name in ("heldout", "helen", "udacity", "external"):
        idx = sets[set_name]
        ref_err, ref_ok = errors_of(systems["mediapipe_192"]["points"], faces, idx)
        for name, s in systems.items():
            if "sets" in s and set_name not in s["sets"]:
                continue
            err, ok = errors_of(s["points"], faces, idx)
            row = {
                "set": set_name,
                "system": name,
                "cpu_ms": round(s["cpu_ms"], 2),
                **summary(err[ok], len(idx)),
            }
            # The same faces for all: those MediaPipe (192 px) answered.
            both = ok & ref_ok
            row["mean_on_mediapipe_answered"] = round(float(np.mean(err[both])), 5) if both.any() else None
            # Collections place the nose tip differently (Udacity's label sits ~1.7 px lower than
            # MediaPipe's landmark 4, HELEN's ~0.3 px): the mean offset of each system, fitted on
            # the target collection's validation faces and removed, measured on the set without them.
            fit = sets[ALIGN[set_name]]
            offset = np.nanmean(s["points"][fit] - faces["landmarks68"][fit, 30], axis=0)
            rest = np.setdiff1d(idx, fit)
            aligned = s["points"].copy()
            aligned[rest] -= offset
            aerr, aok = errors_of(aligned, faces, rest)
            if np.isfinite(offset).all() and aok.any():
                row["mean_aligned"] = round(float(np.mean(aerr[aok])), 5)
                row["offset_px"] = [round(float(o), 3) for o in offset]
            table.append(row)
    return {
        "mediapipe": mp["mediapipe"],
        "sizes": {k: int(len(v)) for k, v in sets.items()},
        "systems": {k: {kk: v for kk, v in s.items() if kk != "points"} for k, s in systems.items()},
        "rows": table,
    }


def markdown(results: dict) -> str:
    """Return the results as a Markdown table."""
    lines = [
        "| set | system | n | answered | mean / IOD | p90 / IOD | same faces (MP 192 answered) | aligned "
        "| CPU ms / face |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results["rows"]:
        same = r["mean_on_mediapipe_answered"]
        lines.append(
            f"| {r['set']} | {r['system']} | {r['n']} | {100 * r['answered']:.1f} % | {100 * r['mean']:.2f} % "
            f"| {100 * r['p90']:.2f} % | {'-' if same is None else f'{100 * same:.2f} %'} "
            f"| {100 * r.get('mean_aligned', float('nan')):.2f} % | {r['cpu_ms']:.1f} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, required=True, help="faces_96.npz (see its PROVENANCE.md)")
    p.add_argument("--ours", type=Path, default=ROOT / "models" / "tracking.onnx", help="the served model")
    p.add_argument(
        "--loco",
        nargs="*",
        default=[],
        metavar="COLLECTION=ONNX",
        help="models trained on one collection only (training.tracking --train-on COLLECTION)",
    )
    p.add_argument("--out", default=str(RESULTS), help="results JSON ('' to skip)")
    p.add_argument(
        "--card",
        action="store_true",
        help="also put the results into models/tracking_metrics.json and render models/tracking.md again",
    )
    args = p.parse_args(argv)
    args.loco = dict(item.split("=", 1) for item in args.loco)
    args.loco = {k: Path(v) for k, v in args.loco.items()}
    if set(args.loco) - set(COLLECTIONS):
        p.error(f"--loco collections are {sorted(COLLECTIONS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = measure(args)
    results["command"] = "python -m bench.tracking_peers " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    print(markdown(results))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    if args.card:
        from training import cards

        cards.store_figures(ROOT / "models" / "tracking_metrics.json", "peers", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
