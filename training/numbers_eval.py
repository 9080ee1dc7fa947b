"""Score the digit model through `POST /api/predict` on digits from other collections, beside peers.

    python -m training.numbers_eval --fonts /usr/share/fonts --metrics models/numbers_metrics.json

The model is trained on MNIST alone. Its card's held-out figures are MNIST's test digits; this
script adds digits from collections it was never trained or tuned on, each drawn on a 280 px
canvas as the page sends it (black ink on white, PNG data URL) and read through the live route,
as a user's program calls it:

- **optdigits**: the test set of UCI's "Optical Recognition of Handwritten Digits" (E. Alpaydin,
  C. Kaynak, 1998; CC BY 4.0): 1,797 digits written by 13 people on NIST's forms at Bogazici
  University, a collection apart from MNIST. Only the 8x8 counts (0-16 ink pixels of each 4x4 block
  of a 32x32 bitmap) are distributed; each is scaled up smoothly to a 200 px digit. Committed as
  tests/data/numbers/optdigits.npz, made by `--optdigits-csv` from the CSV that scikit-learn ships
  (`sklearn/datasets/data/digits.csv.gz`, the same rows as UCI's `optdigits.tes`).
- **handwriting fonts**: digits typeset in the handwriting faces of Debian's font packages
  (HANDWRITING_FONTS; rendering, not handwriting: faces drawn to look handwritten), at random
  sizes, places, tilts and pen widths.
- **canvas digits** (in-distribution, for the peers): the 200 MNIST test digits redrawn as canvases
  in tests/data/numbers/canvas_digits.json.

Peers read the same images: Tesseract 5 (`--psm 10`, one character, digits only) and RapidOCR
(PP-OCR, its own venv: `python -m bench.ocr_vs_tesseract --setup`). Their answers are cached in
bench/results/numbers_peer_answers.json (not committed), so a rerun on the same machine reads only with ours. Right = the route's
200 answer is the digit (a 422 low_certainty is not an answer); a peer is right when its whole
answer is the digit. Cost: CPU ms per image (ours: the whole request in-process, one thread).

Nothing here trains or tunes the model: these sets were made after it was fixed and are only scored.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from training import cards

ROOT = Path(__file__).resolve().parent.parent
OPTDIGITS = ROOT / "tests" / "data" / "numbers" / "optdigits.npz"
CANVAS_DIGITS = ROOT / "tests" / "data" / "numbers" / "canvas_digits.json"
PEER_CACHE = ROOT / "bench" / "results" / "numbers_peer_answers.json"
SIDE = 280  # the page's canvas
SEED = 20261205
# Handwriting faces (file name: Debian package). Digits only; none is used in training.
HANDWRITING_FONTS = {
    "BecauseWeBuild-Regular.otf": "fonts-bwht",
    "BecauseWeConnect-Regular.otf": "fonts-bwht",
    "BecauseWeCreate-Regular.otf": "fonts-bwht",
    "BecauseWeLearn-Regular.otf": "fonts-bwht",
    "BecauseWeMentor-Regular.otf": "fonts-bwht",
    "BecauseWeOrganize-Regular.otf": "fonts-bwht",
    "dkg.ttf": "fonts-dkg-handwriting",
    "dkgBd.ttf": "fonts-dkg-handwriting",
    "Breip.ttf": "fonts-breip",
    "femkeklaver.ttf": "fonts-femkeklaver",
    "Rufscript010.ttf": "fonts-rufscript",
    "Humor-Sans.ttf": "fonts-humor-sans",
    "KleeOne-Regular.ttf": "fonts-klee",
    "ComicNeue-Regular.otf": "fonts-comic-neue",
    "DancingScript-Regular.otf": "fonts-dancingscript",
    "KaushanScript-Regular.otf": "fonts-kaushanscript",
    "kiloji.ttf": "fonts-kiloji",
}
SET_NAMES = {
    "canvas": "MNIST test digits redrawn as canvases (tests/data/numbers; in-distribution)",
    "optdigits": "UCI optdigits test set: 13 other writers, 8x8 counts scaled up",
    "fonts": "handwriting fonts (Debian packages), random size, place, tilt and pen",
}


# ---------------------------------------------------------------------------- the sets


def read_optdigits_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read UCI's optdigits rows (64 counts and the label, comma-separated; .gz or plain)."""
    import gzip

    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    rows = np.loadtxt(raw.decode("ascii").splitlines(), delimiter=",", dtype=np.int64)
    if (
        rows.ndim != 2
        or rows.shape[1] != 65
        or rows[:, :64].max() > 16
        or not set(rows[:, 64]) <= set(range(10))
    ):
        raise ValueError(f"{path} is not optdigits: 64 counts of 0-16 and a digit per row")
    return rows[:, :64].reshape(-1, 8, 8).astype(np.uint8), rows[:, 64].astype(np.uint8)


def load_optdigits(path: Path = OPTDIGITS) -> tuple[np.ndarray, np.ndarray]:
    """The committed optdigits test set: (counts (N, 8, 8) in 0..16, labels)."""
    with np.load(path) as data:
        return data["counts"], data["labels"]


def optdigit_canvas(counts: np.ndarray, side: int = SIDE, digit: int = 200) -> np.ndarray:
    """Draw one 8x8 count image as a canvas: ink scaled up smoothly to `digit` px, black on white."""
    ink = cv2.resize(counts.astype(np.float32) * (255 / 16), (digit, digit), interpolation=cv2.INTER_LINEAR)
    canvas = np.full((side, side), 255, np.uint8)
    at = (side - digit) // 2
    canvas[at : at + digit, at : at + digit] = 255 - np.clip(ink, 0, 255).astype(np.uint8)
    return canvas


def font_digit(font: Path, digit: int, rng: np.random.Generator, side: int = SIDE) -> np.ndarray:
    """Typeset one digit as a person draws it on the canvas: random size, place, tilt and pen width."""
    size = int(rng.integers(side * 45 // 100, side * 75 // 100))
    face = ImageFont.truetype(str(font), size)
    image = Image.new("L", (side, side), 255)
    draw = ImageDraw.Draw(image)
    pen = int(rng.integers(0, max(1, size // 40) + 1))
    centre = (side / 2 + rng.uniform(-0.12, 0.12) * side, side / 2 + rng.uniform(-0.1, 0.1) * side)
    draw.text(centre, str(digit), font=face, fill=0, anchor="mm", stroke_width=pen, stroke_fill=0)
    image = image.rotate(float(rng.uniform(-12, 12)), resample=Image.BILINEAR, fillcolor=255)
    return np.asarray(image)


def find_handwriting_fonts(root: Path) -> dict[str, Path]:
    """Find HANDWRITING_FONTS under `root`; fail naming the packages of the missing ones."""
    from training.ocr_render import find_fonts

    return find_fonts(root, list(HANDWRITING_FONTS), packages=HANDWRITING_FONTS)


def font_set(
    root: Path, per_digit: int = 6, seed: int = SEED
) -> tuple[list[np.ndarray], list[int], list[str]]:
    """Every handwriting face, each digit `per_digit` times: images, labels, and each image's face."""
    rng = np.random.default_rng(seed)
    images, labels, faces = [], [], []
    for name, path in find_handwriting_fonts(root).items():
        for digit in range(10):
            for _ in range(per_digit):
                images.append(font_digit(path, digit, rng))
                labels.append(digit)
                faces.append(name)
    return images, labels, faces


def canvas_set() -> tuple[list[np.ndarray], list[int]]:
    """The committed canvas digits, decoded to gray (white where a transparent canvas is clear)."""
    rows = json.loads(CANVAS_DIGITS.read_text())
    images = []
    for row in rows:
        png = base64.b64decode(row["image"].split(",", 1)[1])
        pixels = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
        if pixels.ndim == 3 and pixels.shape[2] == 4:
            pixels = 255 - pixels[..., 3]
        images.append(pixels)
    return images, [int(row["label"]) for row in rows]


# ---------------------------------------------------------------------------- reading


def data_url(image: np.ndarray) -> str:
    """A gray image as the page posts it: a PNG data URL."""
    ok, png = cv2.imencode(".png", image)
    if not ok:
        raise ValueError("cannot encode image")
    return "data:image/png;base64," + base64.b64encode(png.tobytes()).decode()


def read_route(client, images: list[np.ndarray]) -> tuple[list[int | None], list[int | None], list[float]]:
    """Post each image to /api/predict: the confident answers (None for a 422), every guess, CPU ms each."""
    answers: list[int | None] = []
    guesses: list[int | None] = []
    cpu: list[float] = []
    for image in images:
        body = {"image": data_url(image)}
        start = time.process_time()
        response = client.post("/api/predict", json=body)
        cpu.append(1000 * (time.process_time() - start))
        payload = response.get_json() or {}
        guess = payload.get("prediction")  # a 422 low_certainty still gives its best guess
        guesses.append(guess)
        answers.append(guess if response.status_code == 200 else None)
    return answers, guesses, cpu


def read_peers(images: list[np.ndarray], peers: list[str], cache: dict[str, list]) -> dict[str, dict]:
    """Each installed peer's answers and CPU ms on the images, through (and into) `cache`."""
    from training.ocr_peers import RapidOcr, tesseract_timed

    out: dict[str, dict] = {name: {"answers": [], "cpu": []} for name in peers}
    rapid = None
    try:
        for image in images:
            digest = hashlib.sha1(image.tobytes()).hexdigest()
            for name in peers:
                key = f"{name}/{digest}"
                if key not in cache:
                    if name == "tesseract":
                        cache[key] = tesseract_timed(image, psm=10, whitelist="0123456789")
                    else:
                        rapid = rapid or RapidOcr()
                        cache[key] = list(rapid.read(image))
                text, ms = cache[key]
                out[name]["answers"].append(text.strip())
                out[name]["cpu"].append(ms)
    finally:
        if rapid is not None:
            rapid.close()
    return out


def score(labels: list[int], answers: list, cpu: list[float]) -> dict[str, Any]:
    """Right share (an answer equal to the digit), answered share, CPU ms per image."""
    n = len(labels)
    right = sum(str(a) == str(y) for a, y in zip(answers, labels, strict=True) if a not in (None, ""))
    answered = sum(a not in (None, "") for a in answers)
    return {
        "n": n,
        "right": right,
        "accuracy": 100 * right / max(n, 1),
        "answered": 100 * answered / max(n, 1),
        "cpu_ms": float(np.median(cpu)) if cpu else 0.0,
    }


def per_digit(labels: list[int], answers: list) -> list[float]:
    """Right share for each digit 0-9."""
    labels_arr = np.array(labels)
    right = np.array([str(a) == str(y) for a, y in zip(answers, labels, strict=True)])
    return [float(100 * right[labels_arr == d].mean()) if (labels_arr == d).any() else 0.0 for d in range(10)]


def per_group(labels: list[int], answers: list, groups: list[str]) -> dict[str, float]:
    """Right share within each group (a handwriting face), in the groups' first-seen order."""
    right: dict[str, list[bool]] = {}
    for a, y, g in zip(answers, labels, groups, strict=True):
        right.setdefault(g, []).append(str(a) == str(y))
    return {g: 100 * sum(r) / len(r) for g, r in right.items()}


def evaluate(
    client,
    sets: dict[str, tuple[list[np.ndarray], list[int]] | tuple[list[np.ndarray], list[int], list[str]]],
    peers: list[str],
    cache: dict[str, list],
) -> dict[str, Any]:
    """Read every set through the route and with each peer; return the scored rows by set.

    A set given with a third list (each image's group: its handwriting face) is also scored per group.
    """
    result: dict[str, Any] = {}
    for name, (images, labels, *grouped) in sets.items():
        answers, guesses, cpu = read_route(client, images)
        row: dict[str, Any] = {"description": SET_NAMES.get(name, name), "ours": score(labels, answers, cpu)}
        row["ours"]["best_guess"] = (
            100 * sum(g == y for g, y in zip(guesses, labels, strict=True)) / len(labels)
        )
        row["ours"]["per_digit"] = per_digit(labels, answers)
        confusions: dict[str, int] = {}
        for g, y in zip(guesses, labels, strict=True):
            if g != y:
                confusions[f"{y}->{g}"] = confusions.get(f"{y}->{g}", 0) + 1
        row["ours"]["confusions"] = dict(sorted(confusions.items(), key=lambda kv: -kv[1])[:6])
        if grouped:
            row["ours"]["per_group"] = per_group(labels, answers, grouped[0])
        for peer, read in read_peers(images, peers, cache).items():
            row[peer] = score(labels, read["answers"], read["cpu"])
            if grouped:
                row[peer]["per_group"] = per_group(labels, read["answers"], grouped[0])
        result[name] = row
        print(
            f"{name:10s} n={len(labels)}  "
            + "  ".join(
                f"{k} {v['accuracy']:.2f}%" for k, v in row.items() if isinstance(v, dict) and "accuracy" in v
            ),
            flush=True,
        )
    return result


def peer_versions(peers: list[str]) -> dict[str, str]:
    """Versions of the peers used (as the OCR card names them)."""
    from training.ocr_peers import rapidocr_version, tesseract_version

    versions: dict[str, str] = {}
    if "tesseract" in peers:
        versions["tesseract"] = tesseract_version() or "tesseract"
    if "rapidocr" in peers:
        versions["rapidocr"] = f"rapidocr {rapidocr_version()}"
    return versions


# ---------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--fonts", type=Path, default=Path("/usr/share/fonts"), help="folder searched for HANDWRITING_FONTS"
    )
    parser.add_argument("--per-digit", type=int, default=6, help="images of each digit per handwriting face")
    parser.add_argument("--model", type=Path, help="ONNX file to serve (default: the served digit model)")
    parser.add_argument("--peers", default="tesseract,rapidocr", help="comma-separated; '' for none")
    parser.add_argument(
        "--cache", type=Path, default=PEER_CACHE, help="the peers' answers, kept between runs"
    )
    parser.add_argument(
        "--metrics", type=Path, help="store the figures under 'collections' here and render its card"
    )
    parser.add_argument(
        "--optdigits-csv", type=Path, help="write tests/data/numbers/optdigits.npz from this CSV and stop"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the command line."""
    args = parse_args(argv)
    if args.optdigits_csv:
        counts, labels = read_optdigits_csv(args.optdigits_csv)
        np.savez_compressed(OPTDIGITS, counts=counts, labels=labels)
        print(f"wrote {OPTDIGITS}: {len(labels)} digits")
        return {}
    cv2.setNumThreads(1)
    from config import served_path
    from training.ocr_peers import rapidocr_available, tesseract_version
    from training.quantize import app_client

    model = args.model or served_path("numbers")
    _, client = app_client("numbers", model)
    peers = [p for p in args.peers.split(",") if p]
    peers = [
        p
        for p in peers
        if (p == "tesseract" and tesseract_version()) or (p == "rapidocr" and rapidocr_available())
    ]
    cache = json.loads(args.cache.read_text()) if args.cache.is_file() else {}
    counts, opt_labels = load_optdigits()
    images, labels, faces = font_set(args.fonts, args.per_digit)
    sets = {
        "canvas": canvas_set(),
        "optdigits": ([optdigit_canvas(c) for c in counts], [int(v) for v in opt_labels]),
        "fonts": (images, labels, faces),
    }
    try:
        rows = evaluate(client, sets, peers, cache)
    finally:
        if peers:
            args.cache.parent.mkdir(parents=True, exist_ok=True)
            args.cache.write_text(json.dumps(cache, sort_keys=True) + "\n")
    figures = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python -m training.numbers_eval " + " ".join(sys.argv[1:] if argv is None else argv),
        "model": str(Path(model).relative_to(ROOT) if Path(model).is_relative_to(ROOT) else model),
        "peers": peer_versions(peers),
        "fonts": {name: HANDWRITING_FONTS[name] for name in HANDWRITING_FONTS},
        "per_digit": args.per_digit,
        "sets": rows,
    }
    if args.metrics is not None:
        cards.store_figures(args.metrics, "collections", figures)
    return figures


if __name__ == "__main__":
    main()
