"""Out-of-collection OCR test sets, made by a generator that shares no code with the training renderer.

    python -m training.ocr_evalsets --data /usr/share/fonts --out /tmp/ocr-sets   # write them as files

Training draws lines with `training.ocr_render` (per-character placement, blur-and-threshold ink,
rotation, smooth lighting). These sets come from here only: their own line texts, whole strings
drawn by PIL, fonts that training never sees (`EVAL_FONTS`, `NEIGHBOUR_FONTS`), and their own
distortion models: other printed matter cut by the band just above or below the line (touching or
nearly), print gain by dilation/erosion, perspective, curved paper, shadows and vignetting,
defocus and motion blur, shot noise, colour paper and JPEG. Their seeds differ from every seed
training uses, and no training choice (epochs, thresholds, fonts, hyper-parameters) reads them:
training/ocr.py scores them once, after the model is exported, for the card.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from training.ocr_eval import HeldOut
from training.ocr_render import MAIN_FONT, TRAIN_FONTS, find_fonts

# Fonts for the line itself that no training image uses (checked below).
EVAL_FONTS = (
    "JetBrainsMono-Regular.ttf",
    "Courier Prime Sans.otf",
    "FiraCode-Regular.ttf",
    "mononoki-Regular.ttf",
)
# Fonts of the other printed matter around the line (serif and sans text of a document).
NEIGHBOUR_FONTS = ("DejaVuSerif.ttf", "LiberationSerif-Regular.ttf", "FreeSerif.ttf", "Tinos-Regular.ttf")
assert not set(EVAL_FONTS) & set(TRAIN_FONTS), "evaluation fonts must stay out of training"

WORDS = [
    "Montant",
    "à",
    "payer",
    "avant",
    "le",
    "Référence",
    "client",
    "Total",
    "TTC",
    "Échéance",
    "Facture",
    "n°",
    "Payable",
    "à",
    "réception",
    "Compte",
    "IBAN",
    "BIC",
    "Code",
    "Émetteur",
    "Signature",
    "Date",
    "Tél.",
    "Adresse",
    "Qté",
    "Prix",
    "unitaire",
    "EUR",
    "€",
    "TVA",
    "20%",
    "Page",
    "1/2",
    "Remise",
    "Payment",
    "due",
    "Invoice",
    "Account",
    "Reference",
    "Amount",
    "Customer",
    "Order",
    "Delivery",
]


# ---------------------------------------------------------------------------- texts


def _luhn_gs1(body: str) -> str:
    """GS1 mod-10 check digit (weights 3,1 from the right), written here independently of models.gs1."""
    total = sum(int(c) * (3 if i % 2 == 0 else 1) for i, c in enumerate(reversed(body)))
    return str((10 - total % 10) % 10)


def _num(rng: np.random.Generator, n: int) -> str:
    return "".join(str(d) for d in rng.integers(0, 10, n))


def document_line(rng: np.random.Generator) -> str:
    """The payment line of a document: GDTI, serial, due date, amount, a key between asterisks."""
    gdti = _num(rng, 12)
    gdti += _luhn_gs1(gdti)
    serial = _num(rng, int(rng.choice([10, 10, 8, 12])))
    yymmdd = f"{rng.integers(20, 40):02d}{rng.integers(1, 13):02d}{rng.integers(1, 29):02d}"
    amount_ai, amount = (
        str(rng.choice(["3902", "3902", "3901", "3903"])),
        _num(rng, int(rng.choice([6, 6, 7, 8]))),
    )
    key = _num(rng, int(rng.integers(1, 3)))
    gap = " " if rng.random() < 0.8 else ""
    return (
        f"(253){gdti}{gap}{serial}(17){yymmdd}({amount_ai}){amount}{' ' if rng.random() < 0.8 else ''}*{key}*"
    )


def element_string(rng: np.random.Generator) -> str:
    """A GS1 element string for labels: GTIN or SSCC, then dates, lot, weight or count."""
    gtin = _num(rng, 13)
    head = f"(01){gtin}{_luhn_gs1(gtin)}" if rng.random() < 0.8 else f"(00){_num(rng, 17)}"
    tails = []
    for ai in rng.permutation(["15", "17", "10", "3103", "37", "21"])[: int(rng.integers(1, 4))]:
        if ai in ("15", "17"):
            tails.append(
                f"({ai}){rng.integers(24, 35):02d}{rng.integers(1, 13):02d}{rng.integers(0, 31):02d}"
            )
        elif ai in ("10", "21"):
            pool = list("0123456789ABCDEFGHJKLMNPRSTUVWXYZ")  # lots avoid O and I, as most printers do
            tails.append(f"({ai}){''.join(rng.choice(pool, int(rng.integers(3, 9))))}")
        elif ai == "3103":
            tails.append(f"(3103){_num(rng, 6)}")
        else:
            tails.append(f"(37){int(rng.integers(1, 500))}")
    return head + "".join(tails)


def line_text(rng: np.random.Generator) -> str:
    """Two thirds document payment lines, one third GS1 label strings."""
    return document_line(rng) if rng.random() < 0.67 else element_string(rng)


# ---------------------------------------------------------------------------- drawing


def _draw(text: str, font_path: Path, cap: float) -> tuple[np.ndarray, int, int]:
    """Draw a whole string (ink = 1.0): the image, and the rows of its cap top and baseline."""
    probe = ImageFont.truetype(str(font_path), 200, layout_engine=ImageFont.Layout.BASIC)
    _, htop, _, hbottom = probe.getbbox("H", anchor="ls")
    font = ImageFont.truetype(
        str(font_path), max(8, round(200 * cap / (hbottom - htop))), layout_engine=ImageFont.Layout.BASIC
    )
    left, top, right, bottom = font.getbbox(text, anchor="ls")
    pad = 4
    img = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
    ImageDraw.Draw(img).text((pad - left, pad - top), text, font=font, fill=255, anchor="ls")
    baseline = pad - top
    _, ctop, _, _ = font.getbbox("H", anchor="ls")
    return np.asarray(img, np.float32) / 255, baseline + ctop, baseline


def _neighbour(rng: np.random.Generator, fonts: dict[str, Path], cap: float, width: int) -> np.ndarray:
    """A run of document words in a text font, about as wide as part or all of the line."""
    words = " ".join(rng.choice(WORDS, int(rng.integers(3, 12))))
    ink, _, _ = _draw(words, fonts[str(rng.choice(NEIGHBOUR_FONTS))], cap * float(rng.uniform(0.6, 1.25)))
    limit = int(width * rng.uniform(0.4, 1.3))
    return ink[:, :limit] if ink.shape[1] > limit else ink


def _rows_with_ink(ink: np.ndarray) -> tuple[int, int]:
    rows = np.flatnonzero(ink.max(axis=1) > 0.5)
    return int(rows[0]), int(rows[-1]) + 1


def compose(
    text: str,
    font: Path,
    rng: np.random.Generator,
    fonts: dict[str, Path],
    neighbours: float,
    cap: float = 90,
) -> tuple[np.ndarray, float]:
    """Lay out the line in a band cut from a page, with other print cut by the band above or below.

    Returns the ink image (1.0 = ink) and the line's cap height in it.
    """
    line, ctop, base = _draw(text, font, cap)
    h, w = line.shape
    margin_x = int(cap * rng.uniform(0.3, 1.5))
    above = int(cap * rng.uniform(0.25, 1.2))
    below = int(cap * rng.uniform(0.35, 1.2))
    pieces: list[tuple[np.ndarray, int, int]] = []  # (ink, top row, left column) in band coordinates
    if rng.random() < neighbours:
        other = _neighbour(rng, fonts, cap, w)
        o_top, o_bottom = _rows_with_ink(other)
        # Lowest ink of the text above sits this far over the line's cap top (< 0: they overlap).
        gap = cap * float(rng.uniform(-0.06, 0.3))
        visible = (o_bottom - o_top) * float(rng.uniform(0.2, 0.75))
        above = int(round(max(gap + visible, 0.12 * cap))) - ctop
        left = margin_x + int(rng.integers(-w // 4, w // 2))
        pieces.append((other, int(round(above + ctop - gap - o_bottom)), left))
    height = above + h + below
    if rng.random() < neighbours * 0.3:
        if rng.random() < 0.5:  # text below, its top cut by the band
            other = _neighbour(rng, fonts, cap, w)
            o_top, o_bottom = _rows_with_ink(other)
            gap = cap * float(rng.uniform(0.25, 0.5))  # from the baseline: brackets reach 0.2 cap below
            visible = (o_bottom - o_top) * float(rng.uniform(0.2, 0.6))
            height = int(round(above + base + gap + visible))
            left = margin_x + int(rng.integers(-w // 4, w // 2))
            pieces.append((other, int(round(above + base + gap - o_top)), left))
        else:  # a printed rule just above the line, touching it or not
            thick = max(2, int(cap * rng.uniform(0.03, 0.08)))
            rule = np.ones((thick, int(w * rng.uniform(0.5, 1.2))), np.float32)
            pieces.append((rule, int(above + ctop - cap * rng.uniform(0.02, 0.3)), margin_x))
    band = np.zeros((height, w + 2 * margin_x), np.float32)
    pieces.append((line, above, margin_x))
    for ink, top, left in pieces:
        y0, x0 = max(0, top), max(0, left)
        y1, x1 = min(band.shape[0], top + ink.shape[0]), min(band.shape[1], left + ink.shape[1])
        if y1 > y0 and x1 > x0:
            band[y0:y1, x0:x1] = np.maximum(
                band[y0:y1, x0:x1], ink[y0 - top : y1 - top, x0 - left : x1 - left]
            )
    return band, cap


# ---------------------------------------------------------------------------- distortions


def print_scan(ink: np.ndarray, cap: float, rng: np.random.Generator) -> np.ndarray:
    """Office print and scan: print gain by dilation or erosion, a small tilt, noise, JPEG; gray."""
    k = int(round(cap * rng.uniform(0.0, 0.05)))
    if k:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1))
        ink = (cv2.dilate if rng.random() < 0.55 else cv2.erode)(ink, kernel)
    h, w = ink.shape
    angle = float(rng.uniform(-3, 3))
    grow = int(abs(np.sin(np.radians(angle))) * w / 2) + 2  # the tilted band keeps its ends
    ink = cv2.copyMakeBorder(ink, grow, grow, 0, 0, cv2.BORDER_CONSTANT, value=0)
    m = cv2.getRotationMatrix2D((w / 2, h / 2 + grow), angle, 1.0)
    ink = cv2.warpAffine(ink, m, (w, h + 2 * grow), flags=cv2.INTER_LINEAR)
    target = float(rng.uniform(16, 42))
    small = cv2.resize(ink, None, fx=target / cap, fy=target / cap, interpolation=cv2.INTER_AREA)
    paper, dark = float(rng.uniform(185, 250)), float(rng.uniform(0, 90))
    out = paper + (dark - paper) * small
    out += rng.normal(0, rng.uniform(1, 10), out.shape)
    salt = rng.random(out.shape) < rng.uniform(0, 0.003)
    out[salt] = rng.choice([dark, paper], int(salt.sum()))
    out = np.clip(out, 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(35, 95))])
    return cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)


def photograph(ink: np.ndarray, cap: float, rng: np.random.Generator) -> np.ndarray:
    """A phone photo: curved paper, perspective, shadow and vignette, blur, noise, colour JPEG."""
    h, w = ink.shape
    pad = int(cap * 0.8)
    ink = cv2.copyMakeBorder(ink, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    h, w = ink.shape
    # Curved paper: rows bend along a parabola or half a sine wave across the line.
    xs = np.arange(w, dtype=np.float32)
    amplitude = cap * float(rng.uniform(-0.45, 0.45))
    bend = amplitude * (np.sin(np.pi * xs / w) if rng.random() < 0.5 else 4 * (xs / w - 0.5) ** 2)
    map_x = np.tile(xs, (h, 1))
    map_y = np.arange(h, dtype=np.float32)[:, None] + bend[None, :].astype(np.float32)
    ink = cv2.remap(ink, map_x, map_y.astype(np.float32), cv2.INTER_LINEAR, borderValue=0)
    # Perspective of a camera turned up to ~25 degrees: one end up to 1.25x the other, a slant up to
    # 6 degrees, corners jittered by a twentieth of the cap.
    ratio = float(rng.uniform(0.8, 1.25))
    slant = float(np.tan(np.radians(rng.uniform(-6, 6)))) * h / 2
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    right = (h - h * ratio) / 2
    dst = np.float32([[slant, 0], [w + slant, right], [w - slant, h - right], [-slant, h]])
    dst += rng.uniform(-0.05, 0.05, (4, 2)).astype(np.float32) * cap
    dst -= dst.min(axis=0)
    size = (int(dst[:, 0].max()) + 1, int(dst[:, 1].max()) + 1)
    ink = cv2.warpPerspective(ink, cv2.getPerspectiveTransform(src, dst), size, flags=cv2.INTER_LINEAR)
    target = float(rng.uniform(15, 38))
    ink = cv2.resize(ink, None, fx=target / cap, fy=target / cap, interpolation=cv2.INTER_AREA)
    h, w = ink.shape
    if rng.random() < 0.5:
        r = max(1, int(round(target * rng.uniform(0.02, 0.08))))
        disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)).astype(np.float32)
        ink = cv2.filter2D(ink, -1, disk / disk.sum())
    else:
        n = max(2, int(round(target * rng.uniform(0.03, 0.12))))
        line = np.zeros((n, n), np.float32)
        cv2.line(line, (0, int(rng.integers(0, n))), (n - 1, int(rng.integers(0, n))), 1.0, 1)
        ink = cv2.filter2D(ink, -1, line / line.sum())
    # Light: a vignette, a linear falloff, and a soft-edged shadow across part of the band.
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    light = 1 - float(rng.uniform(0, 0.35)) * (((xx - w / 2) / w) ** 2 + ((yy - h / 2) / h) ** 2) * 2
    light *= 1 - float(rng.uniform(0, 0.3)) * (xx / w if rng.random() < 0.5 else 1 - xx / w)
    if rng.random() < 0.6:
        edge = float(rng.uniform(0.1, 0.9)) * w + (yy - h / 2) * float(rng.uniform(-2, 2))
        soft = float(rng.uniform(0.01, 0.1)) * w
        light *= 1 - float(rng.uniform(0.2, 0.55)) / (1 + np.exp(-(xx - edge) / soft))
    paper = np.array(rng.uniform([170, 175, 180], [245, 250, 255]), np.float32)  # BGR, warm to white
    ink_colour = np.array(rng.uniform([20, 0, 0], [110, 60, 60]), np.float32)  # black to dark blue
    out = (paper + (ink_colour - paper) * ink[..., None]) * light[..., None]
    out += rng.normal(0, 1, out.shape) * np.sqrt(np.maximum(out, 1)) * float(rng.uniform(0.1, 0.6))
    out = np.clip(out, 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 90))])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


# ---------------------------------------------------------------------------- the sets

SPECS = {
    "neighbours-ocrb": (
        "OCR-B lines with other print cut by the band just above/below, print/scan",
        "ocrb",
        1.0,
    ),
    "photo-ocrb": ("OCR-B lines photographed: perspective, curvature, shadows, blur, JPEG", "ocrb", 0.3),
    "unseen-fonts": (
        "fonts never trained on (" + ", ".join(f.rsplit(".", 1)[0] for f in EVAL_FONTS) + ")",
        "eval",
        0.5,
    ),
}


def evaluation_sets(data: str | Path, n: int = 200, seed: int = 770_001) -> list[HeldOut]:
    """Build every out-of-collection set: n single lines each, with their own seeds."""
    fonts = find_fonts(data, [MAIN_FONT, *EVAL_FONTS, *NEIGHBOUR_FONTS])
    out = []
    for k, (name, (description, which, neighbours)) in enumerate(SPECS.items()):
        rng = np.random.default_rng(seed + 31 * k)
        images, lines = [], []
        for i in range(n):
            text = line_text(rng)
            font = fonts[MAIN_FONT] if which == "ocrb" else fonts[EVAL_FONTS[i % len(EVAL_FONTS)]]
            ink, cap = compose(text, font, rng, fonts, neighbours)
            photo = name.startswith("photo") or (which == "eval" and i % 2 == 1)
            images.append(photograph(ink, cap, rng) if photo else print_scan(ink, cap, rng))
            lines.append([text])
        out.append(HeldOut(name, description, images, lines))
    return out


def main(argv: list[str] | None = None) -> None:
    """Write the sets as image files with a labels.tsv each (to look at them, or as test fixtures)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="/usr/share/fonts")
    parser.add_argument("--out", required=True, help="folder: one subfolder per set")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seed", type=int, default=770_001, help="another seed gives other lines")
    parser.add_argument("--only", choices=list(SPECS), help="write this set only")
    parser.add_argument("--jpeg", type=int, default=0, help="save as JPEG of this quality (default PNG)")
    args = parser.parse_args(argv)
    suffix, params = (".jpg", [cv2.IMWRITE_JPEG_QUALITY, args.jpeg]) if args.jpeg else (".png", [])
    for s in evaluation_sets(args.data, args.n, args.seed):
        if args.only and s.name != args.only:
            continue
        folder = Path(args.out) / s.name
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "labels.tsv", "w", encoding="utf-8") as fh:
            fh.write(f"# file\ttext; python -m training.ocr_evalsets {' '.join(argv or sys.argv[1:])}\n")
            for i, (image, lines) in enumerate(zip(s.images, s.lines, strict=True)):
                cv2.imwrite(str(folder / f"{i:03d}{suffix}"), image, params)
                fh.write(f"{i:03d}{suffix}\t{lines[0]}\n")
        print(f"{s.name}: {len(s.images)} images in {folder}")


if __name__ == "__main__":
    main()
