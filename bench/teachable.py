"""Teachable Machine exports without TensorFlow: how close to each format's own runtime, how fast to convert.

    python -m bench.teachable [--repeat 5] [--json]

For every export in tests/data/teachable, in
every format it holds:
- the largest absolute difference between the served probabilities (models.teachable's input,
  the converted ONNX model) and the reference probabilities that the format's own runtime gave on
  the same five images (tf_keras for .h5, @tensorflow/tfjs for TF.js, LiteRT for TFLite:
  tests/data/teachable/reference_own_images.json);
- the conversion time (median of --repeat runs, one thread of this machine), the time from an
  uncached folder to a warmed model (convert, write the cache, load, one inference), and the time
  an upload takes once its zip is received (unpack, convert, check, install: models.teachable).
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "teachable"


def export_path(key: str) -> Path | None:
    """Return the committed file a reference key names ('folder/model file'), or None."""
    path = DATA / key
    return path if path.is_file() else None


def isolated(path: Path, into: Path) -> Path:
    """Copy one export's files (only this model file of the folder) into a folder of its own."""
    folder = into / path.parent.name
    folder.mkdir()
    for other in path.parent.iterdir():
        cache = other.suffix == ".onnx" or other.name.endswith(".onnx.json")
        model = other.suffix in (".h5", ".tflite") or other.name == "model.json"
        if other.is_file() and not cache and (not model or other == path):
            shutil.copyfile(other, folder / other.name)
    return folder / path.name


def zipped(folder: Path) -> bytes:
    """Zip an export's files as Teachable Machine does."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.iterdir()):
            archive.write(path, path.name)
    return buf.getvalue()


def measure(key: str, reference: dict, repeat: int) -> dict:
    """Convert one export repeatedly and compare its served answers with its reference."""
    from models.teachable import TeachableModel, convert_source, teachable_input
    from models.uploads import install_export

    path = export_path(key)
    convert_s = statistics.median(convert_source(path).facts["convert_s"] for _ in range(repeat))
    with tempfile.TemporaryDirectory() as tmp:
        source = isolated(path, Path(tmp))
        archive = zipped(source.parent)
        start = time.perf_counter()
        install_export(io.BytesIO(archive), "bench", Path(tmp) / "uploads")
        upload_s = time.perf_counter() - start
        start = time.perf_counter()
        model = TeachableModel("bench", source)
        model.warmup()
        first_load_s = time.perf_counter() - start
        worst = 0.0
        same_best = 0
        for image, expected in zip(reference["images"], reference["probabilities"], strict=True):
            pixels = np.asarray(Image.open(DATA / "images" / image).convert("RGB"))
            got = model.predict(teachable_input(pixels, model.input_size))[0]
            worst = max(worst, float(np.max(np.abs(got - np.asarray(expected)))))
            same_best += int(np.argmax(got) == int(np.argmax(expected)))
        return {
            "export": key,
            "format": model.source_format,
            "runtime": reference["runtime"],
            "labels": len(model.labels),
            "images": len(reference["images"]),
            "max_abs_diff": worst,
            "same_best_label": same_best,
            "convert_s": convert_s,
            "first_load_s": round(first_load_s, 3),
            "upload_s": round(upload_s, 3),
            "zip_bytes": len(archive),
            "onnx_bytes": model.path.stat().st_size,
        }


def table(rows: list[dict]) -> str:
    """Render the rows as the README's Markdown table."""
    lines = [
        "| export | format | reference runtime | max abs diff (5 images) | same best label | convert "
        "| uncached folder to warm model | zip to installed model |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['export']} | {r['format']} | {r['runtime']} | {r['max_abs_diff']:.1e} | "
            f"{r['same_best_label']}/{r['images']} | {r['convert_s'] * 1000:.0f} ms | {r['first_load_s'] * 1000:.0f} ms | "
            f"{r['upload_s'] * 1000:.0f} ms ({r['zip_bytes'] / 1e6:.1f} MB zip) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Measure every export present and print the table (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="conversions per export (the median is kept)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a Markdown table")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    logging.getLogger("models.teachable").setLevel(logging.ERROR)  # each conversion warns of a missing cache
    references = json.loads((DATA / "reference_own_images.json").read_text(encoding="utf-8"))
    rows = [measure(key, ref, args.repeat) for key, ref in references.items() if export_path(key)]
    if args.json:
        print(
            json.dumps(
                {
                    "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                    "rows": rows,
                },
                indent=2,
            )
        )
    else:
        print(table(rows))
        print(
            f"\n{os.cpu_count()} cores, Python {platform.python_version()}; no TensorFlow imported: "
            f"{not any(m.split('.')[0] in ('tensorflow', 'keras', 'tf_keras') for m in sys.modules)}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
