"""Train the OCR glyph classifier on rendered lines; export models/ocr.keras, .onnx and its card.

    python -m training.ocr --data /usr/share/fonts

Set-up (Debian/Ubuntu): the fonts are the data, and Tesseract is the peer the card compares with.

    apt-get install fonts-ocr-b fonts-dejavu-core fonts-liberation fonts-freefont-ttf \\
        fonts-noto-mono fonts-croscore fonts-go fonts-hack fonts-inconsolata \\
        fonts-jetbrains-mono fonts-courier-prime tesseract-ocr tesseract-ocr-eng

`--data` is the folder searched (recursively, by file name) for the fonts below; a user with
internet gets the same data from those Debian packages (OCR-B is `fonts-ocr-b`). Training lines
are rendered with OCR-B (the main font, most of the lines) and 19 other monospace and sans fonts
for robustness; the held-out set also uses fonts never seen in training (JetBrains Mono, Courier
Prime Sans). Every render is augmented and degraded by a print/scan simulation: ink bleed or
erosion, rotation up to +-5 degrees, 150-600 dpi, blur, uneven lighting, low contrast, light or
dark background, noise, JPEG. `--lines DIR` adds real labelled line images (`labels.tsv`:
file<TAB>text, one line of text per image, `\\n` between lines of a multi-line image).

Training glyphs are cut by `models.ocr.segment`, the serving code itself, and a line is used
only when it cuts into as many glyphs as its text has characters, so train and serve agree.
The card is written with per-character and whole-line accuracy on held-out renders, and the
Tesseract comparison from bench/ocr_vs_tesseract.py when `tesseract` is installed.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from models.ocr import DEFAULT_CHARSET, GLYPH_SIZE, segment
from training import tf_setup

ROOT = Path(__file__).resolve().parent.parent
NAME = "ocr"
CHARSET = DEFAULT_CHARSET

# Font file -> share of the training lines. OCR-B first: it is what the documents are printed in.
TRAIN_FONTS: dict[str, float] = {
    "OCRB.otf": 8.0,
    "OCRBS.otf": 2.0,
    "DejaVuSansMono.ttf": 1.0,
    "DejaVuSansMono-Bold.ttf": 0.7,
    "LiberationMono-Regular.ttf": 1.0,
    "LiberationMono-Bold.ttf": 0.7,
    "FreeMono.ttf": 0.7,
    "FreeMonoBold.ttf": 0.7,
    "NotoSansMono-Regular.ttf": 1.0,
    "NotoSansMono-Bold.ttf": 0.7,
    "Go-Mono.ttf": 0.7,
    "Go-Mono-Bold.ttf": 0.5,
    "Hack-Regular.ttf": 0.7,
    "Inconsolata.otf": 0.7,
    "Cousine-Regular.ttf": 0.7,
    "DejaVuSans.ttf": 0.5,
    "LiberationSans-Regular.ttf": 0.5,
    "FreeSans.ttf": 0.5,
    "Arimo-Regular.ttf": 0.5,
    "Go-Regular.ttf": 0.5,
}
# Never used in training: the held-out set measures reading a font the model has not seen.
HELDOUT_FONTS = ("JetBrainsMono-Regular.ttf", "Courier Prime Sans.otf")
MAIN_FONT = "OCRB.otf"


# ---------------------------------------------------------------------------- text


def _digits(rng: np.random.Generator, n: int) -> str:
    return "".join(rng.choice(list("0123456789"), n))


def _with_check(body: str) -> str:
    from models.gs1 import check_digit

    return body + str(check_digit(body))


def _date(rng: np.random.Generator) -> str:
    return f"{rng.integers(0, 100):02d}{rng.integers(1, 13):02d}{rng.integers(0, 29):02d}"


def payment_line(rng: np.random.Generator) -> str:
    """A document line like (253)3610321456881 1234567890(17)010120(3902)001000 *11*."""
    gdti = _with_check(_digits(rng, 12))
    if rng.random() < 0.05:  # a wrong check digit now and then: the reader must not "fix" it
        gdti = gdti[:-1] + str((int(gdti[-1]) + 1) % 10)
    serial = _digits(rng, 10 if rng.random() < 0.7 else int(rng.integers(1, 18)))
    amount_ai = str(rng.choice(["3902", "3902", "3902", "3901", "3922", "3932"]))
    amount = _digits(rng, 6 if rng.random() < 0.7 else int(rng.integers(3, 10)))
    if amount_ai == "3932":
        amount = "978" + amount
    key = _digits(rng, int(rng.choice([1, 2])))
    head = f"(253){gdti}{' ' if rng.random() < 0.85 else ''}{serial}"
    extra = f"(8020){_digits(rng, int(rng.integers(6, 16)))}" if rng.random() < 0.1 else ""
    return f"{head}(17){_date(rng)}({amount_ai}){amount}{extra}{' ' if rng.random() < 0.85 else ''}*{key}*"


def gs1_line(rng: np.random.Generator) -> str:
    """A GS1 element string with common AIs (GTIN, dates, lots, weights, GLNs)."""
    parts = []
    for _ in range(int(rng.integers(2, 5))):
        kind = int(rng.integers(0, 9))
        if kind == 0:
            parts.append(f"(01){_with_check(_digits(rng, 13))}")
        elif kind == 1:
            parts.append(f"({rng.choice(['11', '13', '15', '17'])}){_date(rng)}")
        elif kind == 2:
            parts.append(f"(10){_alnum(rng, int(rng.integers(3, 10)))}")
        elif kind == 3:
            parts.append(f"(21){_alnum(rng, int(rng.integers(4, 12)))}")
        elif kind == 4:
            parts.append(f"(310{rng.integers(0, 6)}){_digits(rng, 6)}")
        elif kind == 5:
            parts.append(f"({rng.choice(['410', '414', '415'])}){_with_check(_digits(rng, 12))}")
        elif kind == 6:
            parts.append(f"(00){_with_check(_digits(rng, 17))}")
        elif kind == 7:
            parts.append(f"(400){_alnum(rng, int(rng.integers(4, 12)))}")
        else:
            parts.append(f"(392{rng.integers(0, 4)}){_digits(rng, int(rng.integers(3, 8)))}")
    return "".join(parts)


def _alnum(rng: np.random.Generator, n: int) -> str:
    pool = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return "".join(rng.choice(list(pool), n))


def mrz_line(rng: np.random.Generator) -> str:
    """A machine-readable-zone-like line: capitals, digits and filler '<'."""
    n = int(rng.integers(20, 45))
    out = []
    while len(out) < n:
        r = rng.random()
        if r < 0.35:
            out.extend("<" * int(rng.integers(1, 6)))
        elif r < 0.7:
            out.extend(rng.choice(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"), int(rng.integers(2, 9))))
        else:
            out.extend(rng.choice(list("0123456789"), int(rng.integers(2, 9))))
    return "".join(out[:n])


def mixed_line(rng: np.random.Generator) -> str:
    """Random groups over the whole charset, separated by single spaces."""
    groups = []
    for _ in range(int(rng.integers(1, 7))):
        pool = CHARSET if rng.random() < 0.5 else "0123456789" + "()*<>+-/"
        groups.append("".join(rng.choice(list(pool), int(rng.integers(1, 12)))))
    return " ".join(groups)


def random_text(rng: np.random.Generator) -> str:
    """Draw one line of text from the mix of layouts the reader must handle."""
    r = rng.random()
    if r < 0.45:
        return payment_line(rng)
    if r < 0.62:
        return gs1_line(rng)
    if r < 0.74:
        return mrz_line(rng)
    if r < 0.92:
        return mixed_line(rng)
    return " ".join(_digits(rng, int(rng.integers(2, 8))) for _ in range(int(rng.integers(2, 6))))


# ---------------------------------------------------------------------------- rendering


def find_fonts(root: str | Path, names: list[str] | tuple[str, ...]) -> dict[str, Path]:
    """Find font files by name under a folder; fail naming the missing ones and their packages."""
    found: dict[str, Path] = {}
    for path in sorted(Path(root).rglob("*")):
        if path.name in names and path.name not in found:
            found[path.name] = path
    missing = [n for n in names if n not in found]
    if missing:
        raise SystemExit(
            f"fonts not found under {root}: {', '.join(missing)}; install the packages listed in "
            "`python -m training.ocr --help`"
        )
    return found


_FONT_CACHE: dict[tuple[str, int], ImageFont.FreeTypeFont] = {}


def _font(path: Path, size: int) -> ImageFont.FreeTypeFont:
    key = (str(path), size)
    if key not in _FONT_CACHE:
        if len(_FONT_CACHE) > 400:
            _FONT_CACHE.clear()
        # BASIC layout: no ligatures (JetBrains Mono draws "<>" as one diamond otherwise).
        _FONT_CACHE[key] = ImageFont.truetype(str(path), size, layout_engine=ImageFont.Layout.BASIC)
    return _FONT_CACHE[key]


@dataclass
class Style:
    """How one image is printed and scanned."""

    dpi: float = 300.0
    points: float = 11.0
    angle: float = 0.0
    tracking: float = 0.0  # extra letter spacing, in em
    bleed: float = 0.0  # >0 thickens the ink, <0 erodes it (fraction of the stroke threshold)
    blur: float = 0.0  # Gaussian sigma, in cap heights
    ink: float = 0.0
    paper: float = 255.0
    light_text: bool = False
    lighting: float = 0.0  # strength of uneven lighting (0..1)
    noise: float = 0.0  # Gaussian noise sigma, grey levels
    specks: int = 0
    jpeg: int = 0  # JPEG quality, 0 for none
    margin: float = 0.3  # blank border, in cap heights
    line_gap: float = 0.6  # between lines of a block, in cap heights


def clean_style(rng: np.random.Generator, dpi: float = 300.0) -> Style:
    """A clean print at a given dpi: no rotation, no noise, plain black on white."""
    return Style(dpi=dpi, points=float(rng.uniform(10, 12)), margin=float(rng.uniform(0.2, 1.0)))


def degraded_style(rng: np.random.Generator) -> Style:
    """A random print/scan: any dpi from 150 to 600, rotation, bleed, blur, light, noise, JPEG."""
    paper = float(rng.uniform(150, 255))
    ink = float(rng.uniform(0, max(5.0, paper - 70)))
    return Style(
        dpi=float(rng.uniform(150, 600)),
        points=float(rng.uniform(8.5, 13)),
        angle=float(rng.uniform(-5, 5)),
        tracking=float(rng.choice([0.0, rng.uniform(-0.04, 0.12)])),
        bleed=float(rng.uniform(-0.45, 0.5)),
        blur=float(rng.choice([0.0, rng.uniform(0.0, 0.07)])),
        ink=ink,
        paper=paper,
        light_text=bool(rng.random() < 0.2),
        lighting=float(rng.choice([0.0, rng.uniform(0, 0.55)])),
        noise=float(rng.uniform(0, 14)),
        specks=int(rng.choice([0, 0, rng.integers(1, 40)])),
        jpeg=int(rng.choice([0, rng.integers(25, 95)])),
        margin=float(rng.uniform(0.05, 1.5)),
        line_gap=float(rng.uniform(0.45, 1.2)),
    )


def render(lines: list[str], font: Path, style: Style, rng: np.random.Generator) -> np.ndarray:
    """Print lines of text in a font and scan them back: an 8-bit gray image."""
    cap_px = 0.72 * style.points * style.dpi / 72  # cap height in the scanned image
    # Render larger, then downscale (the scanner's anti-aliasing); bounded, for speed at 600 dpi.
    ss = float(np.clip(72 / cap_px, 1.3, 3.0))
    size = max(6, int(round(style.points * style.dpi / 72 * ss)))
    face = _font(font, size)
    ascent, descent = face.getmetrics()
    cap = 0.72 * size
    advances = [[face.getlength(c) + style.tracking * size for c in text] for text in lines]
    width = int(max(sum(a) for a in advances) + 2 * style.margin * cap) + 4
    step = ascent + descent + style.line_gap * cap
    height = int(len(lines) * step - style.line_gap * cap + 2 * style.margin * cap) + 4
    img = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(img)
    for row, (text, adv) in enumerate(zip(lines, advances, strict=True)):
        x = style.margin * cap + 2
        y = style.margin * cap + 2 + row * step
        for char, a in zip(text, adv, strict=True):
            if char != " ":
                draw.text((x, y), char, font=face, fill=255)
            x += a
    ink = np.asarray(img, np.float32) * np.float32(1 / 255)
    if style.bleed:
        # Blur then re-threshold: ink spreads (bleed) or thins (erosion) like a real print.
        soft = cv2.GaussianBlur(ink, (0, 0), max(0.6, 0.035 * cap))
        ink = np.clip((soft - np.float32(0.5 - 0.4 * style.bleed)) * 4 + 0.5, 0, 1)
    if style.angle:
        h, w = ink.shape
        m = cv2.getRotationMatrix2D((w / 2, h / 2), style.angle, 1.0)
        c, s = abs(m[0, 0]), abs(m[0, 1])
        nw, nh = int(h * s + w * c) + 1, int(h * c + w * s) + 1
        m[0, 2] += nw / 2 - w / 2
        m[1, 2] += nh / 2 - h / 2
        ink = cv2.warpAffine(ink, m, (nw, nh), flags=cv2.INTER_LINEAR, borderValue=0)
    h, w = ink.shape
    ink = cv2.resize(ink, (max(1, round(w / ss)), max(1, round(h / ss))), interpolation=cv2.INTER_AREA)
    if style.blur:
        ink = cv2.GaussianBlur(ink, (0, 0), max(0.3, style.blur * cap_px))
    paper, dark = (style.ink, style.paper) if style.light_text else (style.paper, style.ink)
    out = np.float32(paper) + np.float32(dark - paper) * ink
    h, w = out.shape
    if style.lighting:
        # A smooth gradient plus a soft spot, computed coarse and resized: lighting is smooth.
        gh, gw = max(2, h // 8), max(2, w // 8)
        yy, xx = np.mgrid[0:gh, 0:gw].astype(np.float32)
        gx, gy = rng.uniform(-1, 1, 2)
        field = 1 - style.lighting * (0.5 + (gx * (xx / gw - 0.5) + gy * (yy / gh - 0.5)))
        cx, cy = rng.uniform(0, gw), rng.uniform(0, gh)
        spot = np.exp(-(((xx - cx) / (0.6 * gw)) ** 2 + ((yy - cy) / (1.5 * gh)) ** 2))
        field = np.clip(field + 0.3 * style.lighting * spot, 0.15, 1.2).astype(np.float32)
        out *= cv2.resize(field, (w, h), interpolation=cv2.INTER_LINEAR)
    if style.noise:
        out += rng.standard_normal((h, w), dtype=np.float32) * np.float32(style.noise)
    for _ in range(style.specks):
        r = max(1, int(rng.uniform(0.02, 0.06) * cap_px))
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.circle(out, centre, r, float(rng.choice([style.ink, style.paper])), -1)
    out = np.clip(out, 0, 255).astype(np.uint8)
    if style.jpeg:
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, style.jpeg])
        out = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    return out


# ---------------------------------------------------------------------------- glyphs


def glyphs_from_image(image: np.ndarray, lines: list[str]) -> tuple[list[np.ndarray], list[int], int]:
    """Cut an image with the serving segmentation; label glyphs of lines that cut cleanly.

    Returns glyph images, their class indices, and how many lines were cut right.
    """
    seg = segment(image)
    xs: list[np.ndarray] = []
    ys: list[int] = []
    good = 0
    if len(seg.lines) != len(lines):
        return xs, ys, 0
    for glyphs, text in zip(seg.lines, lines, strict=True):
        chars = text.replace(" ", "")
        if len(glyphs) != len(chars) or any(c not in CHARSET for c in chars):
            continue
        good += 1
        xs.extend(g.image for g in glyphs)
        ys.extend(CHARSET.index(c) for c in chars)
    return xs, ys, good


def sample_block(rng: np.random.Generator) -> list[str]:
    """Usually one line; sometimes a band of two or three lines."""
    n = 1 if rng.random() < 0.8 else int(rng.integers(2, 4))
    return [random_text(rng) for _ in range(n)]


def make_glyphs(
    fonts: dict[str, Path],
    n_images: int,
    rng: np.random.Generator,
    clean_share: float = 0.2,
    quiet: bool = False,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Render and cut n_images training images; return glyphs, labels and cutting statistics."""
    names = list(TRAIN_FONTS)
    weights = np.array([TRAIN_FONTS[n] for n in names])
    weights /= weights.sum()
    xs: list[np.ndarray] = []
    ys: list[int] = []
    lines_total = lines_good = 0
    start = time.perf_counter()
    for i in range(n_images):
        font = fonts[names[rng.choice(len(names), p=weights)]]
        block = sample_block(rng)
        style = (
            clean_style(rng, float(rng.uniform(150, 600)))
            if rng.random() < clean_share
            else degraded_style(rng)
        )
        image = render(block, font, style, rng)
        gx, gy, good = glyphs_from_image(image, block)
        xs.extend(gx)
        ys.extend(gy)
        lines_total += len(block)
        lines_good += good
        if not quiet and (i + 1) % 500 == 0:
            rate = (i + 1) / (time.perf_counter() - start)
            print(f"  rendered {i + 1}/{n_images} images ({rate:.1f}/s), {len(xs)} glyphs", flush=True)
    stats = {"lines": lines_total, "lines_cut_right": lines_good}
    x = np.stack(xs).astype(np.float32) if xs else np.zeros((0, GLYPH_SIZE, GLYPH_SIZE), np.float32)
    return x, np.asarray(ys, np.int64), stats


def load_lines_dir(folder: Path) -> list[tuple[np.ndarray, list[str]]]:
    """Load labelled line images: labels.tsv holds file<TAB>text (\\n escapes between lines)."""
    out = []
    with open(folder / "labels.tsv", encoding="utf-8") as fh:
        for row in csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE):
            if len(row) < 2 or row[0].startswith("#"):
                continue
            image = cv2.imread(str(folder / row[0]), cv2.IMREAD_GRAYSCALE)
            if image is None:
                raise SystemExit(f"cannot read {folder / row[0]}")
            out.append((image, row[1].split("\\n")))
    return out


def _render_chunk(job: tuple[str, int, int, float]) -> tuple[np.ndarray, np.ndarray, dict]:
    """Worker: render and cut one chunk of training images (own seed, so runs are repeatable)."""
    cv2.setNumThreads(1)
    data, n, seed, clean_share = job
    fonts = find_fonts(data, list(TRAIN_FONTS))
    x, y, stats = make_glyphs(fonts, n, np.random.default_rng(seed), clean_share, quiet=True)
    return (x * 255).round().astype(np.uint8), y, stats


def build_dataset(data: str, n_images: int, seed: int, workers: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Render n_images in chunks (in `workers` processes); return uint8 glyphs, labels, stats."""
    chunk = 250
    jobs = [(data, min(chunk, n_images - i), seed * 100003 + i, 0.2) for i in range(0, n_images, chunk)]
    xs, ys, total = [], [], {"lines": 0, "lines_cut_right": 0}
    start = time.perf_counter()
    if workers > 1:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(workers) as pool:
            results = pool.imap(_render_chunk, jobs)
            for done, (x, y, stats) in enumerate(results, 1):
                xs.append(x)
                ys.append(y)
                total = {k: total[k] + stats[k] for k in total}
                _progress(done, len(jobs), chunk, sum(len(a) for a in ys), start)
    else:
        for done, job in enumerate(jobs, 1):
            x, y, stats = _render_chunk(job)
            xs.append(x)
            ys.append(y)
            total = {k: total[k] + stats[k] for k in total}
            _progress(done, len(jobs), chunk, sum(len(a) for a in ys), start)
    return np.concatenate(xs), np.concatenate(ys), total


def _progress(done: int, jobs: int, chunk: int, glyphs: int, start: float) -> None:
    minutes = (time.perf_counter() - start) / 60
    print(f"  images {min(done * chunk, jobs * chunk)}: {glyphs} glyphs, {minutes:.1f} min", flush=True)


# ---------------------------------------------------------------------------- evaluation


@dataclass
class HeldOut:
    """One held-out set: images, their expected lines, and how they were made."""

    name: str
    description: str
    images: list[np.ndarray]
    lines: list[list[str]]


def heldout_sets(data: str | Path, n: int = 200, seed: int = 20240601) -> list[HeldOut]:
    """Render the held-out sets (never seen in training: own seed, and fonts not trained on)."""
    fonts = find_fonts(data, [MAIN_FONT, *HELDOUT_FONTS])
    sets = []
    specs = [
        ("clean-300dpi-ocrb", "OCR-B, 300 dpi, clean print", [MAIN_FONT], False),
        (
            "clean-300dpi-unseen",
            "JetBrains Mono + Courier Prime Sans (not trained on), 300 dpi",
            HELDOUT_FONTS,
            False,
        ),
        ("degraded-ocrb", "OCR-B, 150-600 dpi, print/scan degradations", [MAIN_FONT], True),
        ("degraded-unseen", "unseen fonts, 150-600 dpi, print/scan degradations", HELDOUT_FONTS, True),
    ]
    for k, (name, description, names, degraded) in enumerate(specs):
        rng = np.random.default_rng(seed + k)
        images, lines = [], []
        for i in range(n):
            text = payment_line(rng) if i % 2 == 0 else random_text(rng)
            style = degraded_style(rng) if degraded else clean_style(rng, 300.0)
            images.append(render([text], fonts[names[i % len(names)]], style, rng))
            lines.append([text])
        sets.append(HeldOut(name, description, images, lines))
    rng = np.random.default_rng(seed + 99)
    images, lines = [], []
    for _ in range(max(10, n // 4)):
        block = [payment_line(rng) for _ in range(int(rng.integers(2, 4)))]
        images.append(render(block, fonts[MAIN_FONT], degraded_style(rng), rng))
        lines.append(block)
    sets.append(HeldOut("multi-line-ocrb", "OCR-B bands of 2-3 lines, degraded", images, lines))
    return sets


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance between two strings."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def score_lines(expected: list[list[str]], read: list[list[str]]) -> dict:
    """Exact-line and character accuracy of read lines against the expected ones."""
    lines = exact = chars = errors = 0
    for want, got in zip(expected, read, strict=True):
        got = got + [""] * (len(want) - len(got))
        for i, w in enumerate(want):
            lines += 1
            exact += got[i] == w
            chars += len(w)
            errors += edit_distance(got[i], w)
        # Extra lines read (noise taken for text) count as errors too.
        errors += sum(len(g) for g in got[len(want) :])
    return {
        "lines": lines,
        "exact_lines": exact,
        "line_accuracy": 100 * exact / max(lines, 1),
        "char_accuracy": 100 * (1 - errors / max(chars, 1)),
    }


def per_class_accuracy(expected: list[list[str]], results: list[dict]) -> tuple[dict, int, int]:
    """Per-character accuracy over glyphs of lines cut into the right number of glyphs."""
    hits: dict[str, list[int]] = {c: [0, 0] for c in CHARSET}
    cut_right = total = 0
    for want, result in zip(expected, results, strict=True):
        for i, text in enumerate(want):
            total += 1
            if i >= len(result["lines"]):
                continue
            chars = [c["char"] for c in result["lines"][i]["characters"]]
            truth = text.replace(" ", "")
            if len(chars) != len(truth):
                continue
            cut_right += 1
            for t, p in zip(truth, chars, strict=True):
                hits[t][1] += 1
                hits[t][0] += t == p
    return {c: 100 * h / n for c, (h, n) in hits.items() if n}, cut_right, total


def evaluate(model_path: Path, sets: list[HeldOut]) -> dict:
    """Read every held-out set with the served model (ONNX, the server's own code) and score it."""
    from models.ocr import OcrModel

    model = OcrModel("ocr", model_path)
    out = {}
    for s in sets:
        start = time.perf_counter()
        results = [model(image) for image in s.images]
        ms = 1000 * (time.perf_counter() - start) / max(1, len(s.images))
        read = [[line["text"] for line in r["lines"]] for r in results]
        per_class, cut_right, total = per_class_accuracy(s.lines, results)
        out[s.name] = {
            **score_lines(s.lines, read),
            "description": s.description,
            "per_class": per_class,
            "segmentation": 100 * cut_right / max(total, 1),
            "ms_per_image": ms,
            "failures": [(w, g) for w, g in zip(s.lines, read, strict=True) if w != g][:5],
        }
        r = out[s.name]
        print(
            f"  {s.name}: lines {r['line_accuracy']:.1f}% exact, chars {r['char_accuracy']:.2f}%, "
            f"cut right {r['segmentation']:.1f}%, {ms:.0f} ms/image",
            flush=True,
        )
    return out


# ---------------------------------------------------------------------------- test fixtures

EXAMPLE_54 = "(253)3610321456881 1234567890(17)010120(3902)001000 *11*"
EXAMPLE_53 = "(253)3610321456881 1234567890(17)010120(3902)001000 *5*"


def write_fixtures(data: str, folder: Path, n_degraded: int = 40, seed: int = 4242) -> None:
    """Render the committed test images: named layouts (lines/) and a degraded set (degraded/)."""
    fonts = find_fonts(data, [MAIN_FONT, *HELDOUT_FONTS])
    ocrb = fonts[MAIN_FONT]
    rng = np.random.default_rng(seed)
    lines_dir, degraded_dir = folder / "lines", folder / "degraded"
    lines_dir.mkdir(parents=True, exist_ok=True)
    degraded_dir.mkdir(parents=True, exist_ok=True)
    clean = Style(dpi=300, points=11, margin=0.4)
    named = [
        ("payment_54.png", [EXAMPLE_54], clean),
        ("payment_53.png", [EXAMPLE_53], clean),
        ("payment_bad_check.png", ["(253)3610321456882 1234567890(17)010120(3902)001000 *11*"], clean),
        ("gs1_gtin.png", ["(01)09501101530003(17)251231(10)AB12C(3103)000525"], clean),
        ("mrz.png", ["P<FRADUPONT<<MARIE<ANNE<<<<<<<<<<<<<<<<<<<<<"], clean),
        ("mixed.png", ["12/05-2023 <+42> (7)*8*"], clean),
        ("three_lines.png", ["(415)3014531200000(8020)12345678901", EXAMPLE_54, "0123456789 +-/<>"], clean),
        ("payment_150dpi.png", [EXAMPLE_54], Style(dpi=150, points=11, margin=0.3)),
        ("payment_600dpi_band.png", [EXAMPLE_54], Style(dpi=600, points=10, margin=3.0)),
        ("payment_rotated.png", [EXAMPLE_54], Style(dpi=300, points=11, angle=4.0, margin=0.6)),
        ("payment_dark.png", [EXAMPLE_53], Style(dpi=300, points=11, ink=30, paper=235, light_text=True)),
        (
            "payment_photo.png",
            [EXAMPLE_54],
            Style(
                dpi=250,
                points=11,
                angle=-2.5,
                bleed=0.2,
                blur=0.03,
                ink=50,
                paper=200,
                lighting=0.4,
                noise=6,
                jpeg=60,
            ),
        ),
    ]
    with open(lines_dir / "labels.tsv", "w", encoding="utf-8") as fh:
        fh.write(
            "# file\ttext (\\n between the lines of a multi-line image); rendered by training/ocr.py --fixtures\n"
        )
        for name, lines, style in named:
            cv2.imwrite(str(lines_dir / name), render(lines, ocrb, style, rng))
            joined = "\\n".join(lines)
            fh.write(f"{name}\t{joined}\n")
    with open(degraded_dir / "labels.tsv", "w", encoding="utf-8") as fh:
        fh.write("# file\ttext; OCR-B and unseen fonts, random print/scan degradations, saved as JPEG 90\n")
        for i in range(n_degraded):
            text = payment_line(rng) if i % 2 == 0 else random_text(rng)
            font = ocrb if i % 4 != 3 else fonts[HELDOUT_FONTS[(i // 4) % len(HELDOUT_FONTS)]]
            style = degraded_style(rng)
            style.dpi = min(style.dpi, 240.0)  # with JPEG, keeps the committed files small
            name = f"degraded_{i:03d}.jpg"
            cv2.imwrite(
                str(degraded_dir / name), render([text], font, style, rng), [cv2.IMWRITE_JPEG_QUALITY, 90]
            )
            fh.write(f"{name}\t{text}\n")
    print(f"wrote {len(named)} named images to {lines_dir} and {n_degraded} degraded ones to {degraded_dir}")


# ---------------------------------------------------------------------------- model


def build_model(n_classes: int):
    """A small CNN over 32x32 glyph windows: three conv+pool stages, one hidden dense layer."""
    import keras
    from keras import layers

    inputs = keras.Input((GLYPH_SIZE, GLYPH_SIZE, 1), name="glyphs")
    x = inputs
    for width in (16, 32, 64):
        x = layers.Conv2D(width, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dense(128, activation="relu")(x)
    x = layers.Dropout(0.3)(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="chars")(x)
    return keras.Model(inputs, outputs, name="ocr_glyphs")


def make_batches(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int):
    """Shuffled batches of uint8 glyphs as float 0..1, shifted by up to a pixel (cutting jitter)."""
    import keras

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.rng = np.random.default_rng(seed)
            self.order = self.rng.permutation(len(x))

        def __len__(self) -> int:
            return int(math.ceil(len(x) / batch_size))

        def __getitem__(self, index: int):
            idx = np.sort(self.order[index * batch_size : (index + 1) * batch_size])
            xb = x[idx].astype(np.float32) * np.float32(1 / 255)
            dy, dx = self.rng.integers(-1, 2, 2)
            xb = np.roll(xb, (int(dy), int(dx)), axis=(1, 2))
            return xb[..., None], y[idx]

        def on_epoch_end(self) -> None:
            self.order = self.rng.permutation(len(x))

    return Batches()


def export_onnx(model, path: Path, charset: str, version: str) -> None:
    """Export to ONNX and store the charset (and a version) in the file's metadata."""
    import onnx

    model.export(str(path), format="onnx", verbose=False)
    proto = onnx.load(str(path))
    for key, value in (("charset", charset), ("version", version)):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def train(args: argparse.Namespace) -> dict:
    """Render, cut, train, export, evaluate and describe the model; return the measured facts."""
    import keras
    import tensorflow as tf

    cv2.setNumThreads(1)
    tf_setup.configure(args.threads, args.seed)
    find_fonts(args.data, list(TRAIN_FONTS) + list(HELDOUT_FONTS))  # fail early, naming what is missing

    wall = time.perf_counter()
    print(f"rendering {args.images} training images with {args.workers} worker(s)", flush=True)
    cache = Path(args.cache) if args.cache else None
    if cache is not None and cache.is_file():
        with np.load(cache) as saved:
            x, y, stats = saved["x"], saved["y"], json.loads(str(saved["stats"]))
        print(f"loaded {len(x)} rendered glyphs from {cache}", flush=True)
    else:
        x, y, stats = build_dataset(args.data, args.images, args.seed, args.workers)
        if cache is not None:
            np.savez(cache, x=x, y=y, stats=json.dumps(stats))
    n_real = 0
    if args.lines:
        for image, lines in load_lines_dir(Path(args.lines)):
            gx, gy, good = glyphs_from_image(image, lines)
            if gx:
                # Real glyphs are few and precious: repeat them.
                x = np.concatenate([x] + [(np.stack(gx) * 255).round().astype(np.uint8)] * args.lines_repeat)
                y = np.concatenate([y] + [np.asarray(gy, np.int64)] * args.lines_repeat)
                n_real += len(gx)
    render_minutes = (time.perf_counter() - wall) / 60
    print(
        f"{len(x)} glyphs from {stats['lines_cut_right']}/{stats['lines']} lines cut right "
        f"({render_minutes:.1f} min); {n_real} real glyphs",
        flush=True,
    )
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(x))
    n_val = max(1, len(x) // 20)
    x_val, y_val = x[order[:n_val]], y[order[:n_val]]
    x_fit, y_fit = x[order[n_val:]], y[order[n_val:]]

    batches = make_batches(x_fit, y_fit, args.batch, args.seed)
    steps = len(batches) * args.epochs
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=args.lr / 10,
        decay_steps=max(1, steps - len(batches) // 2),
        alpha=0.02,
        warmup_target=args.lr,
        warmup_steps=len(batches) // 2,
    )
    model = build_model(len(CHARSET))
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    start = time.perf_counter()
    history = model.fit(
        batches,
        epochs=args.epochs,
        validation_data=(x_val[..., None].astype(np.float32) / 255, y_val),
        verbose=2,
    ).history
    train_minutes = (time.perf_counter() - start) / 60

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    keras_path, onnx_path = out / f"{NAME}.keras", out / f"{NAME}.onnx"
    plain = build_model(len(CHARSET))
    plain.set_weights(model.get_weights())
    plain.save(keras_path)
    version = f"{dt.date.today().isoformat()}-{args.seed}"
    model(x_val[:8, ..., None].astype(np.float32) / 255)  # the exporter needs the model called once
    export_onnx(model, onnx_path, CHARSET, version)
    (out / f"{NAME}_charset.txt").write_text(CHARSET + "\n", encoding="utf-8")

    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    sample = x_val[:512, ..., None].astype(np.float32) / 255
    onnx_diff = float(
        np.abs(
            session.run(None, {session.get_inputs()[0].name: sample})[0] - model.predict(sample, verbose=0)
        ).max()
    )
    val_accuracy = float(history["val_accuracy"][-1] * 100)
    print(f"validation glyph accuracy {val_accuracy:.2f}%, ONNX vs Keras {onnx_diff:.1e}", flush=True)

    print("evaluating on held-out renders", flush=True)
    sets = heldout_sets(args.data, n=args.heldout, seed=args.seed + 7919)
    heldout = evaluate(onnx_path, sets)
    bench = None
    if not args.no_bench:
        from bench.ocr_vs_tesseract import compare, tesseract_version

        if tesseract_version():
            print("running the Tesseract comparison", flush=True)
            bench = compare(onnx_path, [s for s in sets if not s.name.startswith("multi")])
        else:
            print("tesseract not installed: the card will have no peer comparison", flush=True)
    facts = {
        "date": dt.date.today().isoformat(),
        "command": "python -m training.ocr " + " ".join(sys.argv[1:]),
        "data": args.data,
        "fonts": {
            n: str(p) for n, p in find_fonts(args.data, list(TRAIN_FONTS) + list(HELDOUT_FONTS)).items()
        },
        "images": args.images,
        "glyphs": len(x),
        "n_real": n_real,
        "cut_stats": stats,
        "n_val": n_val,
        "params": model.count_params(),
        "epochs": args.epochs,
        "batch": args.batch,
        "lr": args.lr,
        "render_minutes": render_minutes,
        "train_minutes": train_minutes,
        "total_minutes": (time.perf_counter() - wall) / 60,
        "machine": f"{platform.machine()} CPU, {args.threads} TensorFlow threads (TF {tf.__version__}), "
        f"{args.workers} render worker(s)",
        "val_accuracy": val_accuracy,
        "onnx_diff": onnx_diff,
        "heldout": heldout,
        "bench": bench,
        "version": version,
        "history": {k: [float(v) for v in vals] for k, vals in history.items()},
    }
    (out / f"{NAME}_metrics.json").write_text(json.dumps(facts, indent=1, default=str), encoding="utf-8")
    write_card(out / f"{NAME}.md", facts)
    print(f"wrote {keras_path}, {onnx_path}, {out / f'{NAME}.md'}", flush=True)
    return facts


# ---------------------------------------------------------------------------- card


def write_card(path: Path, f: dict) -> None:
    """Write the model card from the measured facts."""
    h = f["heldout"]
    rows = "\n".join(
        f"| {name} | {r['description']} | {r['lines']} | {r['line_accuracy']:.1f}% | {r['char_accuracy']:.2f}% "
        f"| {r['segmentation']:.1f}% | {r['ms_per_image']:.0f} |"
        for name, r in h.items()
    )
    classes = {}
    for r in h.values():
        for c, acc in r["per_class"].items():
            classes.setdefault(c, []).append(acc)
    per_char = " ".join(
        f"`{c}` {min(v):.1f}" for c, v in sorted(classes.items(), key=lambda kv: CHARSET.index(kv[0]))
    )
    bench = f.get("bench")
    if bench:
        brows = "\n".join(
            f"| {name} | {b['ours']['line_accuracy']:.1f}% | {b['tesseract']['line_accuracy']:.1f}% "
            f"| {b['ours']['char_accuracy']:.2f}% | {b['tesseract']['char_accuracy']:.2f}% "
            f"| {b['ours']['ms_per_image']:.0f} | {b['tesseract']['ms_per_image']:.0f} |"
            for name, b in bench["sets"].items()
        )
        bench_text = f"""Same held-out line images, read by this model and by {bench["tesseract"]}
(`--psm 7`, whitelist `{bench["whitelist"]}`, language `eng`; Debian has no OCR-B traineddata).
Exact line = the whole line right, spaces included.

| set | ours: exact lines | Tesseract: exact lines | ours: chars | Tesseract: chars | ours ms/line | Tesseract ms/line |
|---|---|---|---|---|---|---|
{brows}

Reproduce alone: `python -m bench.ocr_vs_tesseract --data {f["data"]}`."""
    else:
        bench_text = "Not run (Tesseract not installed). Run `python -m bench.ocr_vs_tesseract`."
    fonts = ", ".join(f"{n} ({w:g})" for n, w in TRAIN_FONTS.items())
    text = f"""# OCR glyph classifier (`models/ocr.onnx`)

Reads printed lines such as `(253)3610321456881 1234567890(17)010120(3902)001000 *11*`: the
server (`models/ocr.py`) finds lines and cuts glyphs; this CNN classifies each glyph among
{len(CHARSET)} characters `{CHARSET}` (space comes from the gaps). Trained {f["date"]}.

## Data

Rendered by `training/ocr.py` from real fonts (Debian packages, see the script's docstring), no
scans: {f["images"]} training images (80% one line, 20% bands of 2-3 lines), lines drawn from
payment-document lines with GS1 AIs (45%, 53/54-glyph layouts among them), other GS1 element
strings, MRZ-like lines and random groups over the charset. Fonts (share of images): {fonts}.
Every image is printed and scanned in simulation: 20% clean at 150-600 dpi, 80% degraded (ink
bleed or erosion, rotation +-5 degrees, 150-600 dpi, 8.5-13 pt, blur, uneven lighting, contrast
down to 70 grey levels, 20% light text on dark, noise, specks, JPEG 25-95).
Glyphs are cut by the server's own `models.ocr.segment`; {f["cut_stats"]["lines_cut_right"]} of
{f["cut_stats"]["lines"]} lines cut into exactly their number of characters and gave the
{f["glyphs"]} training glyphs ({f["n_val"]} kept for validation); the rest were skipped.

## Model

3 x (3x3 conv + 2x2 max-pool, 16/32/64 filters), dense 128, dropout 0.3, softmax; {f["params"]:,}
parameters; input a 32x32 window of 1.6 cap heights around each glyph (its own pixels only),
so size and height on the line are kept. Adam, cosine schedule peaking at {f["lr"]}, batch
{f["batch"]}, {f["epochs"]} epochs. Validation glyph accuracy {f["val_accuracy"]:.2f}%. ONNX agrees
with Keras within {f["onnx_diff"]:.1e}. The charset is in the ONNX metadata (`charset`) and in
`models/ocr_charset.txt`.

Time: rendering {f["render_minutes"]:.1f} min, training {f["train_minutes"]:.1f} min, whole run
{f["total_minutes"]:.1f} min on {f["machine"]}.

## Held-out accuracy

Rendered with another seed; "unseen" sets use fonts never used in training. Half of each
set is payment lines (53/54 glyphs), half the other layouts. Read end to end by the served code
(segmentation + ONNX). Chars = 1 - edit distance / length; cut right = lines segmented into
exactly their number of glyphs.

| set | what | lines | exact lines | chars | cut right | ms/image |
|---|---|---|---|---|---|---|
{rows}

Per-character accuracy (%, lowest over the sets, on lines cut right): {per_char}

## Peer comparison: Tesseract

{bench_text}

## Limits

- Trained on renders only: real photos with perspective, curved paper or motion blur are not
  covered beyond rotation +-5 degrees; add labelled real lines with `--lines DIR`.
- Letters in fonts far from OCR-B are the weakest classes (see per-character accuracy).
- The segmentation assumes roughly monospaced text on straight lines (pitch-based splitting
  and spaces); proportional fonts read less well.
- The control key between asterisks is read, not verified: its algorithm belongs to the issuer.

## Reproduce

    {f["command"]}

Exact numbers vary slightly with the machine (thread scheduling); the seed fixes the data.
"""
    path.write_text(text, encoding="utf-8")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", default="/usr/share/fonts", help="folder holding the fonts (searched recursively)"
    )
    parser.add_argument("--out", default=str(ROOT / "models"), help="folder for the model files and card")
    parser.add_argument("--images", type=int, default=3000, help="training images to render")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    parser.add_argument("--heldout", type=int, default=200, help="lines per held-out set")
    parser.add_argument("--lines", metavar="DIR", help="real labelled line images (labels.tsv)")
    parser.add_argument(
        "--lines-repeat", type=int, default=20, help="times each real glyph is shown per epoch"
    )
    parser.add_argument("--threads", type=int, default=2, help="TensorFlow intra-op threads")
    parser.add_argument("--workers", type=int, default=2, help="render processes")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-bench", action="store_true", help="skip the Tesseract comparison")
    parser.add_argument(
        "--cache", metavar="NPZ", help="keep the rendered glyphs here and reuse them on the next run"
    )
    parser.add_argument(
        "--fixtures", metavar="DIR", help="write the test fixtures to DIR instead of training"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run the command line."""
    args = parse_args(argv)
    if args.fixtures:
        write_fixtures(args.data, Path(args.fixtures))
        return
    train(args)


if __name__ == "__main__":
    main()
