"""Read the same held-out line images with our OCR and with Tesseract; compare line accuracy.

    python -m bench.ocr_vs_tesseract --data /usr/share/fonts [--model models/ocr.onnx] [--n 200]

Needs `tesseract-ocr` (Debian; `tesseract-ocr-eng` comes with it) and the fonts listed in
training/ocr_render.py. Tesseract runs as its command-line tool (`--psm 7`: one text line, with a
character whitelist of our charset), one process per image, with one thread. The held-out lines
are rendered by training/ocr_eval.py: clean at 300 dpi, and degraded (150-600 dpi, rotation, blur,
noise, lighting, JPEG), in OCR-B and in fonts not used in training. Results are printed and
written to bench/results/ocr_vs_tesseract.json and .md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2

from training.ocr_eval import compare, heldout_sets, tesseract_version

ROOT = Path(__file__).resolve().parent.parent


def to_markdown(result: dict) -> str:
    """Render the comparison as a markdown table."""
    rows = [
        "| set | ours: exact lines | Tesseract: exact lines | ours: exact, spaces ignored "
        "| Tesseract: exact, spaces ignored | ours: chars | Tesseract: chars |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in result["sets"].items():
        o, t = r["ours"], r["tesseract"]
        rows.append(
            f"| {name} | {o['line_accuracy']:.1f}% | {t['line_accuracy']:.1f}% "
            f"| {o['line_accuracy_ignoring_spaces']:.1f}% | {t['line_accuracy_ignoring_spaces']:.1f}% "
            f"| {o['char_accuracy']:.2f}% | {t['char_accuracy']:.2f}% |"
        )
    return f"{result['tesseract']}, psm 7, whitelist `{result['whitelist']}`\n\n" + "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Run the comparison from the command line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="/usr/share/fonts", help="folder holding the fonts")
    parser.add_argument("--model", default=str(ROOT / "models" / "ocr.onnx"))
    parser.add_argument("--n", type=int, default=200, help="lines per set")
    parser.add_argument(
        "--seed", type=int, default=1, help="the training seed (held-out sets use seed + 7919)"
    )
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args(argv)
    if tesseract_version() is None:
        raise SystemExit("tesseract is not installed: apt-get install tesseract-ocr")
    cv2.setNumThreads(1)
    sets = [
        s for s in heldout_sets(args.data, n=args.n, seed=args.seed + 7919) if not s.name.startswith("multi")
    ]
    result = compare(Path(args.model), sets)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ocr_vs_tesseract.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    (out / "ocr_vs_tesseract.md").write_text(to_markdown(result), encoding="utf-8")
    print(to_markdown(result))


if __name__ == "__main__":
    main()
