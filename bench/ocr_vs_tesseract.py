"""Read the same line images with our OCR, Tesseract 5 and RapidOCR; compare accuracy and CPU cost.

    python -m bench.ocr_vs_tesseract --setup              # once: RapidOCR's venv (bench/ocr_rapidocr.txt)
    python -m bench.ocr_vs_tesseract --data /usr/share/fonts [--n 100] [--card]

Needs `tesseract-ocr` (Debian; `tesseract-ocr-eng` comes with it) and the fonts listed in
training/ocr_render.py and training/ocr_evalsets.py. RapidOCR 3 runs from its own venv,
bench/peers/.venv-rapidocr (its OpenCV and NumPy differ from ours); its wheel ships its ONNX
models, so it runs offline. The lines: in-distribution held-out renders (training/ocr_eval.py:
clean 300 dpi and degraded OCR-B) and the out-of-collection sets of training/ocr_evalsets.py
(neighbouring print, photos, unseen fonts), the first --n of each. Readers and scoring:
training/ocr_peers.py. Results are printed and written to bench/results/ocr_vs_tesseract.json and
.md; --card also puts them in models/ocr_metrics.json and re-renders models/ocr.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "bench" / "ocr_rapidocr.txt"
# The in-distribution sets the peers read too (the others are the out-of-collection sets).
PEER_SETS = ("clean-300dpi-ocrb", "degraded-ocrb")
NAMES = {"ours": "ours", "tesseract": "Tesseract", "rapidocr": "RapidOCR"}


def setup() -> None:
    """Create RapidOCR's venv and install its pinned requirements."""
    from bench import venvs
    from training.ocr_peers import RAPIDOCR_VENV

    venvs.ensure(RAPIDOCR_VENV, REQUIREMENTS, label="RapidOCR")
    print(f"RapidOCR installed in {RAPIDOCR_VENV.relative_to(ROOT)}")


def to_markdown(result: dict) -> str:
    """Render the comparison as a markdown table: exact lines, characters and CPU ms per reader."""
    readers = ["ours", *result["peers"]]
    head = " | ".join(f"{NAMES[r]}: exact" for r in readers)
    chars = " | ".join(f"{NAMES[r]}: chars" for r in readers)
    ms = " | ".join(f"{NAMES[r]}: CPU ms" for r in readers)
    rows = [f"| set | lines | {head} | {chars} | {ms} |", "|---|---" + "|---" * 3 * len(readers) + "|"]
    for name, r in result["sets"].items():
        cells = [f"{r[x]['line_accuracy']:.1f}%" for x in readers]
        cells += [f"{r[x]['char_accuracy']:.2f}%" for x in readers]
        cells += [f"{r[x]['ms_per_image']:.0f}" for x in readers]
        rows.append(f"| {name} | {r['lines']} | " + " | ".join(cells) + " |")
    versions = ", ".join(result[p] for p in result["peers"])
    return f"{versions}; exact = whole line, spaces included\n\n" + "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Run the comparison from the command line."""
    from config import served_path

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="/usr/share/fonts", help="folder holding the fonts")
    parser.add_argument("--model", default=str(served_path("ocr")), help="default: the served file")
    parser.add_argument("--n", type=int, default=100, help="lines per set")
    parser.add_argument(
        "--seed", type=int, default=1, help="the training seed (held-out sets use seed + 7919)"
    )
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--setup", action="store_true", help="install RapidOCR's venv and stop")
    parser.add_argument(
        "--peer-cache", help="JSON file keeping the peers' answers (default: in --out)", default=None
    )
    parser.add_argument(
        "--card", action="store_true", help="write the result into models/ocr_metrics.json and ocr.md"
    )
    args = parser.parse_args(argv)
    if args.setup:
        setup()
        return
    from training.ocr_eval import heldout_sets
    from training.ocr_evalsets import evaluation_sets
    from training.ocr_peers import compare, rapidocr_available, tesseract_version

    if tesseract_version() is None:
        raise SystemExit("tesseract is not installed: apt-get install tesseract-ocr")
    if not rapidocr_available():
        raise SystemExit("RapidOCR is not installed: python -m bench.ocr_vs_tesseract --setup")
    cv2.setNumThreads(1)
    sets = [s for s in heldout_sets(args.data, n=args.n, seed=args.seed + 7919) if s.name in PEER_SETS]
    cache = Path(args.peer_cache) if args.peer_cache else Path(args.out) / "ocr_peer_answers.json"
    cache.parent.mkdir(parents=True, exist_ok=True)
    result = compare(Path(args.model), sets + evaluation_sets(args.data, n=args.n), cache=cache)
    result["command"] = "python -m bench.ocr_vs_tesseract " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ocr_vs_tesseract.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    (out / "ocr_vs_tesseract.md").write_text(to_markdown(result), encoding="utf-8")
    print(to_markdown(result))
    if args.card:
        from training import cards
        from training.ocr import NAME, card_text

        metrics = ROOT / "models" / f"{NAME}_metrics.json"
        facts = json.loads(metrics.read_text(encoding="utf-8"))
        facts["bench"] = result
        cards.write_metrics(metrics, facts)
        (ROOT / "models" / f"{NAME}.md").write_text(card_text(facts), encoding="utf-8")
        print(f"wrote {metrics} and models/{NAME}.md")


if __name__ == "__main__":
    main()
