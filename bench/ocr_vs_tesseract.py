"""Read the same held-out line images with our OCR and with Tesseract; compare line accuracy.

    python -m bench.ocr_vs_tesseract --data /usr/share/fonts [--model models/ocr.onnx] [--n 200]

Needs `tesseract-ocr` (Debian; `tesseract-ocr-eng` comes with it) and the fonts listed in
training/ocr.py. Tesseract runs as its command-line tool (`--psm 7`: one text line, with a
character whitelist of our charset), one process per image, with one thread. The held-out lines
are rendered by training/ocr.py: clean at 300 dpi, and degraded (150-600 dpi, rotation, blur,
noise, lighting, JPEG), in OCR-B and in fonts not used in training. Results are printed and
written to bench/results/ocr_vs_tesseract.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
WHITELIST = "0123456789()*<>+-/ABCDEFGHIJKLMNOPQRSTUVWXYZ "  # the space lets it keep word gaps


def tesseract_version() -> str | None:
    """Return 'tesseract X.Y.Z', or None when it is not installed."""
    exe = shutil.which("tesseract")
    if exe is None:
        return None
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
    first = (out.stdout or out.stderr).splitlines()
    return first[0].strip() if first else "tesseract"


def tesseract_read(image: np.ndarray) -> str:
    """Read one line image with Tesseract (psm 7, whitelist) and return its text."""
    ok, png = cv2.imencode(".png", image)
    if not ok:
        raise ValueError("cannot encode image")
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    cmd = [
        "tesseract", "stdin", "stdout", "--psm", "7", "-l", "eng",
        "-c", f"tessedit_char_whitelist={WHITELIST}",
        "-c", "preserve_interword_spaces=1",
    ]  # fmt: skip
    out = subprocess.run(cmd, input=png.tobytes(), capture_output=True, env=env, check=False)
    return out.stdout.decode("utf-8", "replace").strip()


def _score(expected: list[str], read: list[str], seconds: float) -> dict:
    from training.ocr import score_lines

    scored = score_lines([[e] for e in expected], [[r] for r in read])
    spaceless = sum(e.replace(" ", "") == r.replace(" ", "") for e, r in zip(expected, read, strict=True))
    return {
        **scored,
        "line_accuracy_ignoring_spaces": 100 * spaceless / max(len(expected), 1),
        "ms_per_image": 1000 * seconds / max(len(expected), 1),
    }


def compare(model_path: Path, sets: list) -> dict:
    """Read every single-line held-out set with both readers and score them."""
    from models.ocr import OcrModel

    model = OcrModel("ocr", Path(model_path))
    result = {"tesseract": tesseract_version(), "whitelist": WHITELIST, "sets": {}}
    for s in sets:
        expected = [lines[0] for lines in s.lines]
        start = time.perf_counter()
        ours = ["\n".join(line["text"] for line in model(image)["lines"]) for image in s.images]
        ours_s = time.perf_counter() - start
        start = time.perf_counter()
        theirs = [tesseract_read(image) for image in s.images]
        theirs_s = time.perf_counter() - start
        row = {
            "description": s.description,
            "ours": _score(expected, ours, ours_s),
            "tesseract": _score(expected, theirs, theirs_s),
            "examples": [
                {"expected": e, "ours": o, "tesseract": t}
                for e, o, t in zip(expected, ours, theirs, strict=True)
                if e != o or e != t
            ][:5],
        }
        result["sets"][s.name] = row
        print(
            f"{s.name:22s} exact lines: ours {row['ours']['line_accuracy']:5.1f}%  "
            f"tesseract {row['tesseract']['line_accuracy']:5.1f}%   chars: ours "
            f"{row['ours']['char_accuracy']:6.2f}%  tesseract {row['tesseract']['char_accuracy']:6.2f}%",
            flush=True,
        )
    return result


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
    from training.ocr import heldout_sets

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
