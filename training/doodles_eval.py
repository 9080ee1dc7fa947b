r"""Measure the doodle classifier through /api/classifier: bitmaps and canvas renderings side by side.

Run from the repository root (after `python -m training.doodles`, which writes the metrics JSON):

    python -m training.doodles_eval --data data/quickdraw/quickdraw_28.npz

On the held-out test split of `training.doodles` (same seed, never used for training or for
choosing anything), every drawing is sent to the real route through Flask's test client twice:
as its 28x28 dataset bitmap (PNG) and as a canvas file from `training.doodle_render` (a pen model
used nowhere in training). The committed canvas fixtures (tests/data/doodles) are sent as well.
Writes the figures into `models/doodles_metrics.json` under "served" and re-renders the card.
"""

from __future__ import annotations

import argparse
import base64
import csv
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from training import cards
from training.doodle_data import load_data, stratified_split
from training.doodles import SEED

FIXTURES = Path("tests/data/doodles")
RENDER_SEED = 20261204
GEOMETRY_N = 1000  # drawings whose served bitmaps are measured against the dataset's  # not the training seed: the renderings are drawn independently of it


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(prog="python -m training.doodles_eval", description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="the training data (quickdraw_28.npz)")
    p.add_argument("--metrics", type=Path, default=Path("models/doodles_metrics.json"))
    p.add_argument(
        "--per-class", type=int, default=None, help="at most N test drawings per class (quick runs)"
    )
    p.add_argument("--fixtures", type=Path, default=FIXTURES)
    p.add_argument(
        "--cost-of",
        type=Path,
        default=None,
        help="only time this folder's doodles.onnx against the served models/doodles.onnx (side by side) "
        "and store the keep rule's figures in its doodles_metrics.json",
    )
    p.add_argument("--calls", type=int, default=2000, help="timed calls per model for --cost-of")
    return p.parse_args(argv)


def make_client(model_dir: Path | None = None):
    """Return a test client of the app as configured by default, saving nothing.

    With `model_dir`, the default classifier `doodles` is that folder's doodles.onnx (a candidate
    measured through the route before it is installed) instead of models/doodles.onnx.
    """
    from app import create_app

    tmp = Path(tempfile.mkdtemp(prefix="doodles-eval-"))
    config = {
        "SAVE_IMAGES": False,
        "LOG_LEVEL": "WARNING",
        "IMAGE_DIR": str(tmp / "images"),
        "DATABASE_URL": f"sqlite:///{tmp / 'eval.db'}",
    }
    if model_dir is not None:
        from config import ModelSpec

        folder = model_dir.resolve()
        config["MODELS"] = {
            "doodles": ModelSpec(
                type="doodle", path=str(folder / "doodles.onnx"), labels=str(folder / "doodles_labels.txt")
            )
        }
    app = create_app(config)
    return app, app.test_client()


def post(client, data: bytes, mime: str, transport: str = "json") -> tuple[dict, float]:
    """Send one image to /api/classifier as users do; return the JSON answer and the seconds taken."""
    start = time.perf_counter()
    if transport == "multipart":
        ext = "jpg" if mime == "image/jpeg" else "png"
        r = client.post(
            "/api/classifier",
            data={"file": (io.BytesIO(data), f"drawing.{ext}", mime)},
            content_type="multipart/form-data",
        )
    else:
        url = f"data:{mime};base64,{base64.b64encode(data).decode()}"
        r = client.post("/api/classifier", json={"base64_drawing": url})
    seconds = time.perf_counter() - start
    body = r.get_json()
    if r.status_code != 200:
        raise RuntimeError(f"/api/classifier answered {r.status_code}: {body}")
    return body, seconds


def png(bitmap: np.ndarray) -> bytes:
    """Encode a 28x28 bitmap as PNG bytes."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(bitmap, "L").save(buf, format="PNG")
    return buf.getvalue()


def score(hits: list[bool], top3: list[bool]) -> dict:
    """Summarise a list of hits."""
    return {"n": len(hits), "top1": float(np.mean(hits)), "top3": float(np.mean(top3))}


def by_key(rows: list[dict], key: str) -> dict:
    """Return top-1 per value of `key` over rows with a `hit`."""
    groups: dict[str, list[bool]] = {}
    for row in rows:
        groups.setdefault(str(row[key]), []).append(row["hit"])
    return {k: {"n": len(v), "top1": float(np.mean(v))} for k, v in sorted(groups.items())}


def geometry(bitmaps: np.ndarray) -> dict:
    """Measure how bitmaps are drawn: ink box on the long side, its edge level, ink mass."""
    spans, edges = [], []
    for b in bitmaps.astype(np.float32) / 255.0:
        rows, cols = b.max(axis=1), b.max(axis=0)
        profile = rows if np.ptp(np.flatnonzero(rows)) >= np.ptp(np.flatnonzero(cols)) else cols
        ink = np.flatnonzero(profile > 0)
        spans.append(ink[-1] - ink[0] + 1)
        edges.append((profile[ink[0]] + profile[ink[-1]]) / 2)
    return {
        "n": len(bitmaps),
        "long_side_26": float(np.mean(np.asarray(spans) == 26)),
        "edge_level": float(np.mean(edges)),
        "mass": float(np.mean(bitmaps.astype(np.float32).sum(axis=(1, 2)) / 255.0)),
    }


def served_bitmap(model, data: bytes) -> np.ndarray:
    """Return the 28x28 bitmap the service makes of an image file (as the route decodes it)."""
    from models.image import decode_bytes

    image = decode_bytes(data, source="eval", max_bytes=1 << 26, max_pixels=1 << 24)
    return model.preprocess(image.pixels_as(model.input_mode))[0][0, :, :, 0].astype(np.uint8)


def evaluate_split(client, model, x: np.ndarray, y: np.ndarray, names: list[str]) -> dict:
    """Send every held-out drawing as a bitmap and as a new-renderer canvas; return the figures."""
    from training.doodle_render import render

    rng = np.random.default_rng(RENDER_SEED)
    bitmap_hits, bitmap_top3, canvas_rows, canvas_top3, seconds, served = [], [], [], [], [], []
    restroked_hits: list[bool] = []
    for i, (bitmap, label) in enumerate(zip(x, y, strict=True)):
        name = names[int(label)]
        body, _ = post(client, png(bitmap), "image/png")
        bitmap_hits.append(body["label"] == name)
        bitmap_top3.append(name in [t["label"] for t in body["top"]])
        r = render(bitmap, rng)
        # The re-stroked drawing as Google would have rendered it: what the canvas should score.
        body, _ = post(client, png(r.bitmap), "image/png")
        restroked_hits.append(body["label"] == name)
        body, s = post(client, r.data, r.mime, r.transport)
        seconds.append(s)
        if len(served) < GEOMETRY_N:
            served.append(served_bitmap(model, r.data))
        canvas_rows.append(
            {
                "hit": body["label"] == name,
                "pen": r.pen,
                "format": r.mime.split("/")[1],
                "background": r.background,
                "transport": r.transport,
                "colour": r.colour,
            }
        )
        canvas_top3.append(name in [t["label"] for t in body["top"]])
        if (i + 1) % 1000 == 0:
            print(f"{i + 1} / {len(y)} drawings", flush=True)
    canvas = score([r["hit"] for r in canvas_rows], canvas_top3)
    canvas["by"] = {k: by_key(canvas_rows, k) for k in ("pen", "format", "background", "transport", "colour")}
    return {
        "bitmap": score(bitmap_hits, bitmap_top3),
        "restroked": {"n": len(restroked_hits), "top1": float(np.mean(restroked_hits))},
        "canvas": canvas,
        "route_ms": 1000 * float(np.median(seconds)),
        "geometry": {"dataset": geometry(x[:GEOMETRY_N]), "served": geometry(np.stack(served))},
    }


def evaluate_fixtures(client, folder: Path) -> dict:
    """Send the committed canvas fixtures (and their raw bitmaps) through the route."""
    with open(folder / "labels.csv", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    with np.load(folder / "doodles_28.npz") as d:
        bitmaps = d["x"]
    hits, top3, raw_hits, raw_top3 = [], [], [], []
    for row in rows:
        body, _ = post(client, (folder / row["file"]).read_bytes(), "image/png")
        hits.append(body["label"] == row["label"])
        top3.append(row["label"] in [t["label"] for t in body["top"]])
        body, _ = post(client, png(bitmaps[int(Path(row["file"]).name[:3])]), "image/png")
        raw_hits.append(body["label"] == row["label"])
        raw_top3.append(row["label"] in [t["label"] for t in body["top"]])
    return {"canvas": score(hits, top3), "bitmap": score(raw_hits, raw_top3), "folder": str(folder)}


def model_ms(model, x: np.ndarray) -> float:
    """Return the median ms of the model alone (ONNX Runtime on one preprocessed 28x28 bitmap)."""
    tensors = [model.preprocess(b)[0] for b in x[:300]]
    for t in tensors[:20]:
        model.predict(t)
    times = []
    for t in tensors:
        start = time.perf_counter()
        model.predict(t)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def side_by_side_ms(paths: list[Path], x: np.ndarray, calls: int) -> list[float]:
    """Return each ONNX model's median ms on one drawing, the models timed in alternating order."""
    from training.export import interleaved_ms

    return interleaved_ms(paths, [b.astype(np.float32)[None, :, :, None] for b in x], calls)


def keep_rule(folder: Path, x: np.ndarray, calls: int, served: Path = Path("models")) -> dict:
    """Time a candidate against the served model and apply the keep rule: top-1 at least the served one's, cost at most 2x."""
    import json

    candidate = json.loads((folder / "doodles_metrics.json").read_text(encoding="utf-8"))
    current = json.loads((served / "doodles_metrics.json").read_text(encoding="utf-8"))
    ms, served_ms = side_by_side_ms([folder / "doodles.onnx", served / "doodles.onnx"], x, calls)
    rule = {
        "served_version": current["version"],
        "served_top1": current["top1"],
        "candidate_ms": ms,
        "served_ms": served_ms,
        "ratio": ms / served_ms,
        "calls": calls,
    }
    rule["passed"] = candidate["top1"] >= rule["served_top1"] and rule["ratio"] <= 2.0
    return rule


def main(argv: list[str] | None = None) -> dict:
    """Measure bitmaps and canvases through the route, store the figures, re-render the card."""
    import json
    import os
    import platform

    args = parse_args(argv)
    x, y, names, _ = load_data(args.data, 5000)
    _, _, te = stratified_split(y, 0.10, 0.05, SEED)
    te = np.sort(te)
    if args.per_class:
        te = np.concatenate([te[y[te] == c][: args.per_class] for c in range(len(names))])
    if args.cost_of:
        rule = keep_rule(args.cost_of, x[te][:200], args.calls)
        rule["command"] = (
            f"python -m training.doodles_eval --data {os.path.relpath(args.data)} --cost-of "
            f"{os.path.relpath(args.cost_of)}" + (f" --calls {args.calls}" if args.calls != 2000 else "")
        )
        cards.store_figures(args.cost_of / "doodles_metrics.json", "keep_rule", rule)
        print(
            f"{args.cost_of}: {rule['candidate_ms']:.3f} ms per drawing, served {rule['served_ms']:.3f} ms "
            f"(x{rule['ratio']:.2f}, median of {args.calls} calls each); keep rule "
            f"{'passed' if rule['passed'] else 'failed'}"
        )
        return rule
    app, client = make_client()
    start = time.time()
    model = app.extensions["registry"].models[app.config["DEFAULT_CLASSIFIER"]]
    split = evaluate_split(client, model, x[te], y[te], names)
    fixtures = evaluate_fixtures(client, args.fixtures)
    served = {
        "split": split,
        "fixtures": fixtures,
        "model_ms": model_ms(model, x[te]),
        "gap": split["bitmap"]["top1"] - split["canvas"]["top1"],
        "minutes": (time.time() - start) / 60,
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores shared with other jobs",
        "command": "python -m training.doodles_eval --data "
        + os.path.relpath(args.data)
        + (f" --per-class {args.per_class}" if args.per_class else ""),
    }
    metrics = json.loads(args.metrics.read_text(encoding="utf-8")) if args.metrics.is_file() else {}
    metrics["served"] = served
    cards.write_metrics(args.metrics, metrics)
    if "names" in metrics:
        args.metrics.with_name("doodles.md").write_text(cards.render("doodles", metrics), encoding="utf-8")
    print(
        f"held-out through the route: bitmap top-1 {split['bitmap']['top1']:.4f}, "
        f"canvas top-1 {split['canvas']['top1']:.4f} ({split['canvas']['n']} drawings); "
        f"fixtures canvas {fixtures['canvas']['top1']:.4f}, bitmap {fixtures['bitmap']['top1']:.4f}; "
        f"route {split['route_ms']:.1f} ms, model {served['model_ms']:.2f} ms"
    )
    return served


if __name__ == "__main__":
    main(sys.argv[1:])
