"""Check the doodle preprocessing against Google's own strokes: how the Quick, Draw! bitmaps were made.

The fixture `tests/data/doodles/strokes` holds 48 of Google's simplified drawings (0-255 stroke
coordinates) with the dataset bitmaps rendered from them. Three checks:

- a reference rasterizer (`rasterize`, Google's recipe: 256-unit box, 16-unit round pen, 16 units of
  padding, centred by the bounding box, anti-aliased) against the dataset bitmaps, and the recipe's
  variants (pen, padding, centring), so the geometry `models.doodles` assumes is measured on data;
- the served path: each drawing drawn on a canvas as the doodle page sends it (and at other canvas and
  pen sizes, on white or transparent), decoded and preprocessed as `/api/classifier` does, against
  Google's bitmap of the same drawing, next to a naive crop-and-resize baseline;
- the model: its top-1 on Google's bitmaps and on the served canvases of the same drawings. These
  drawings are rows 0 and 1 of Google's files (held out of training by `training/doodles.py` since its
  strokes exclusion; training data of older models) and only 48: the agreement between the two answers
  is the figure that means something, not their accuracy.

    python -m training.doodle_strokes [--fixture DIR] [--data quickdraw_28.npz] [--metrics models/doodles_metrics.json]

With `--metrics` the figures go under "strokes_check" in that file and its card is re-rendered;
`--data` (the training data) also counts the fixture's drawings in the training run's splits.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from training.doodle_stroke_render import (  # noqa: F401 - re-exported for the checks' callers
    BOX,
    FILL,
    LINE,
    PAD,
    PAGE_PEN,
    SIZE,
    SNAPSHOT,
    canvas_ink,
    canvas_png,
    compare,
    page_png,
    rasterize,
    strokes,
    summary,
)

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "data" / "doodles" / "strokes"
CANVASES = (280, 400, 600)
PENS = (8.0, 12.0, 20.0)
NAIVE_SIDE = 24


def load_fixture(folder: Path = FIXTURE) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Return the fixture's drawings (ndjson records, in order) and its bitmaps npz as arrays."""
    lines = (folder / "strokes.ndjson").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    with np.load(folder / "bitmaps.npz") as npz:
        arrays = {key: npz[key] for key in npz.files}
    if len(records) != len(arrays["x"]):
        raise ValueError(f"{folder}: {len(records)} drawings but {len(arrays['x'])} bitmaps")
    return records, arrays


def served_gray(png: bytes) -> np.ndarray:
    """Decode a PNG as the route does and return the gray pixels the doodle model is given."""
    from models.image import decode_bytes

    image = decode_bytes(png, source="json", max_bytes=1 << 24, max_pixels=1 << 24)
    return image.gray()  # transparency composited on white, as InputImage.pixels_as("gray")


def naive(gray: np.ndarray) -> np.ndarray:
    """Baseline: crop the ink box, area-resize its long side to 24 px, centre it in 28x28."""
    ink = 255.0 - gray.astype(np.float32)
    ys, xs = np.nonzero(ink > 0)
    ink = ink[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    h, w = ink.shape
    f = NAIVE_SIDE / max(h, w)
    nh, nw = max(1, round(h * f)), max(1, round(w * f))
    small = cv2.resize(ink, (nw, nh), interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
    out = np.zeros((SIZE, SIZE), np.float32)
    top, left = (SIZE - nh) // 2, (SIZE - nw) // 2
    out[top : top + nh, left : left + nw] = small
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def geometry(x: np.ndarray) -> dict[str, float]:
    """Return the mean ink mass of a bitmap stack, in pixels at full level."""
    return {"mass": float(x.astype(np.float64).sum(axis=(1, 2)).mean() / 255.0)}


def centroids(x: np.ndarray) -> np.ndarray:
    """Return each bitmap's ink centroid (row, column) in px."""
    yy, xx = np.mgrid[: x.shape[1], : x.shape[2]]
    w = x.astype(np.float64)
    return np.stack([(w * yy).sum((1, 2)), (w * xx).sum((1, 2))], axis=1) / w.sum((1, 2))[:, None]


def variants() -> list[dict[str, Any]]:
    """Return the recipe variants tried: pen, padding and centring, one changed at a time, and a grid."""
    out = [{"line": LINE, "pad": PAD, "centre": True}]
    out += [{"line": w, "pad": PAD, "centre": True} for w in (8.0, 12.0, 14.0, 18.0, 20.0, 24.0)]
    out += [{"line": LINE, "pad": p, "centre": True} for p in (0.0, 8.0, 12.0, 20.0, 24.0)]
    out += [{"line": LINE, "pad": PAD, "centre": False}]
    return out


def conditions() -> list[dict[str, Any]]:
    """Return the canvases checked: the page's own snapshot, then every canvas size x pen."""
    out: list[dict[str, Any]] = [{"name": "page", "canvas": SNAPSHOT, "pen": PAGE_PEN}]
    out += [{"name": f"{side}/{pen:g}", "canvas": side, "pen": pen} for side in CANVASES for pen in PENS]
    return out


def render_condition(drawing: list, condition: dict[str, Any], *, transparent: bool = True) -> bytes:
    """Return the PNG a condition sends for one drawing (the page's is always transparent)."""
    if condition["name"] == "page":
        return page_png(drawing)
    return canvas_png(drawing, condition["canvas"], condition["pen"], transparent=transparent)


def check_rasterizer(records: list[dict], x: np.ndarray) -> dict[str, Any]:
    """Compare the reference rasterizer and its variants with the dataset bitmaps."""
    rows = []
    for v in variants():
        drawn = np.stack([rasterize(r["drawing"], **v) for r in records])
        rows.append({**v, **summary(drawn, x)})
    best = min(rows, key=lambda row: row["mad"])
    ref = np.stack([rasterize(r["drawing"]) for r in records])
    mad, _ = compare(ref, x)
    worst = int(np.argmax(mad))
    return {
        "variants": rows,
        "best": {k: best[k] for k in ("line", "pad", "centre")},
        "worst": {
            "word": records[worst]["word"],
            "key_id": records[worst]["key_id"],
            "mad": float(mad[worst]),
        },
        "geometry": {"dataset": geometry(x), "reference": geometry(ref)},
    }


def check_served(records: list[dict], x: np.ndarray) -> tuple[dict[str, Any], dict[str, np.ndarray], dict]:
    """Run every condition's canvases through the served preprocessing; compare with the dataset.

    Each canvas is sent black on transparent (as the page sends it) and, but for the page's own
    snapshot, black on white; `identical` says whether both gave the same bitmaps, bit for bit.
    """
    from models.doodles import to_bitmap

    rows, served, inputs = [], {}, {}
    for condition in conditions():
        grays = [served_gray(render_condition(r["drawing"], condition)) for r in records]
        bitmaps = np.stack([to_bitmap(g) for g in grays])
        row = {
            **condition,
            "served": summary(bitmaps, x),
            "naive": summary(np.stack([naive(g) for g in grays]), x),
        }
        shift = (centroids(bitmaps) - centroids(x)).mean(axis=0)  # systematic offset, px (row, column)
        row.update(geometry=geometry(bitmaps), shift=[float(v) for v in shift])
        if condition["name"] != "page":
            white = [
                served_gray(render_condition(r["drawing"], condition, transparent=False)) for r in records
            ]
            row["identical"] = bool(np.array_equal(bitmaps, np.stack([to_bitmap(g) for g in white])))
        served[condition["name"]], inputs[condition["name"]] = bitmaps, grays
        rows.append(row)
    return {"conditions": rows, "fill": FILL}, served, inputs


def sensitivity(inputs: dict[str, list[np.ndarray]], x: np.ndarray) -> list[dict[str, Any]]:
    """Return the served MAD (mean over conditions) with `models.doodles`' scale and pen moved a little."""
    import models.doodles as md

    span, width = md.CENTRE_SPAN, md.STROKE_WIDTH
    changes = (
        ("as served", 0.0, 1.0),
        ("centre lines -0.5 px", -0.5, 1.0),
        ("centre lines +0.5 px", 0.5, 1.0),
    )
    changes += (("pen x0.8", 0.0, 0.8), ("pen x1.2", 0.0, 1.2))
    rows = []
    try:
        for change, d_span, k_width in changes:
            md.CENTRE_SPAN, md.STROKE_WIDTH = span + d_span, width * k_width  # read by to_bitmap per call
            mads = [
                compare(np.stack([md.to_bitmap(g) for g in grays]), x)[0].mean() for grays in inputs.values()
            ]
            rows.append({"change": change, "mad": float(np.mean(mads)), "mad_worst": float(max(mads))})
    finally:
        md.CENTRE_SPAN, md.STROKE_WIDTH = span, width
    return rows


def splits(records: list[dict], arrays: dict[str, np.ndarray], data: Path, metrics: dict) -> dict[str, int]:
    """Count the fixture's drawings in the training run's train / val / test splits and its exclusion."""
    from training.doodle_data import load_data
    from training.doodle_strokes_eval import split_of_rows

    _, y, names, src = load_data(data, None)
    where = split_of_rows(y, src, [str(n) for n in names], metrics)
    counts = {"train": 0, "val": 0, "test": 0, "excluded": 0}
    for c, k in zip(arrays["y"], arrays["src_index"], strict=True):
        row = np.flatnonzero((y == int(c)) & (src == int(k)))
        counts[where[int(row[0])]] += 1
    return counts


def check_model(
    x: np.ndarray, y: np.ndarray, served: dict[str, np.ndarray], model_path: Path, records: list[dict]
) -> dict[str, Any]:
    """Return the model's top-1 on Google's bitmaps and on each condition's served bitmaps, and agreement."""
    from models.doodles import DoodleModel

    model = DoodleModel("doodles", model_path)

    def top1(bitmaps: np.ndarray) -> np.ndarray:
        return np.array(
            [int(np.argmax(model.predict(b.astype(np.float32)[None, :, :, None]))) for b in bitmaps]
        )

    google = top1(x)
    out: dict[str, Any] = {"n": len(x), "google_top1": float((google == y).mean()), "conditions": {}}
    out["differ"] = []  # every canvas whose served answer is not the answer on Google's bitmap
    for name, bitmaps in served.items():
        pred = top1(bitmaps)
        out["conditions"][name] = {"top1": float((pred == y).mean()), "agree": float((pred == google).mean())}
        for i in np.flatnonzero(pred != google):
            labels = {"label": y[i], "google": google[i], "served": pred[i]}
            out["differ"].append(
                {
                    "condition": name,
                    "key_id": records[i]["key_id"],
                    **{k: model.labels[v] for k, v in labels.items()},
                }
            )
    agree = [c["agree"] for c in out["conditions"].values()]
    out["agree_min"], out["agree_mean"] = float(min(agree)), float(np.mean(agree))
    return out


def markdown(facts: dict[str, Any]) -> str:
    """Return the figures as Markdown tables."""
    r, s, m = facts["rasterizer"], facts["served"], facts["model"]
    out = [f"Reference rasterizer vs the {facts['n']} dataset bitmaps (grey levels 0-255):", ""]
    out += [
        "| line | padding | centring | MAD | worst MAD | correlation |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for v in r["variants"]:
        centring = "bbox" if v["centre"] else "none"
        out.append(
            f"| {v['line']:g} | {v['pad']:g} | {centring} | {v['mad']:.2f} | {v['mad_max']:.1f} | {v['corr']:.4f} |"
        )
    out += ["", "Served path (`to_bitmap`) vs the dataset bitmaps of the same drawings:", ""]
    out += [
        "| canvas px / pen px | served MAD | served corr | naive MAD | naive corr | white = transparent "
        "| model top-1 | agrees with Google's bitmap |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in s["conditions"]:
        mc = m.get("conditions", {}).get(c["name"], {"top1": float("nan"), "agree": float("nan")})
        same = {True: "yes", False: "no"}.get(c.get("identical"), "-")
        out.append(
            f"| {c['name']} | {c['served']['mad']:.2f} | {c['served']['corr']:.4f} | {c['naive']['mad']:.2f} "
            f"| {c['naive']['corr']:.4f} | {same} | {mc['top1']:.3f} | {mc['agree']:.3f} |"
        )
    if m:
        out += ["", f"Model top-1 on Google's own bitmaps: {m['google_top1']:.3f} ({m['n']} drawings)."]
    if "splits" in facts:
        out.append(f"Fixture drawings by training split: {facts['splits']}.")
    return "\n".join(out)


def run(
    folder: Path = FIXTURE,
    model_path: Path | None = ROOT / "models" / "doodles.onnx",
    data: Path | None = None,
    metrics: dict | None = None,
) -> dict[str, Any]:
    """Run all three checks on a fixture folder and return the figures."""
    records, arrays = load_fixture(folder)
    x, y = arrays["x"], arrays["y"].astype(int)
    served_facts, served, inputs = check_served(records, x)
    served_facts["sensitivity"] = sensitivity(inputs, x)
    facts: dict[str, Any] = {
        "n": len(records),
        "fixture": str(folder.relative_to(ROOT) if folder.is_relative_to(ROOT) else folder),
        "rasterizer": check_rasterizer(records, x),
        "served": served_facts,
        "model": check_model(x, y, served, model_path, records) if model_path else {},
        "command": "python -m training.doodle_strokes --data data/quickdraw/quickdraw_28.npz "
        "--metrics models/doodles_metrics.json",
    }
    if data is not None and metrics is not None:
        facts["splits"] = splits(records, arrays, data, metrics)
    return facts


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Print the checks as Markdown; with --metrics, store them and re-render the card."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixture", type=Path, default=FIXTURE, help="strokes.ndjson + bitmaps.npz folder")
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "doodles.onnx")
    parser.add_argument("--metrics", type=Path, help="doodles_metrics.json to store the figures in")
    parser.add_argument("--data", type=Path, help="the training data (quickdraw_28.npz): count the splits")
    args = parser.parse_args(argv)
    metrics = json.loads(args.metrics.read_text(encoding="utf-8")) if args.metrics else None
    facts = run(args.fixture.resolve(), args.model, args.data, metrics)
    print(markdown(facts))
    if args.metrics:
        from training import cards

        cards.store_figures(args.metrics, "strokes_check", facts)
    return facts


if __name__ == "__main__":
    main()
