"""Print and scan lines of text in simulation: the OCR model's training data and held-out renders.

Lines are drawn from the layouts the reader must handle (payment-document lines with GS1 AIs,
GS1 element strings, MRZ-like lines, random groups over the charset), printed in a real font
(`find_fonts` searches a folder such as /usr/share/fonts) and degraded by a print/scan
simulation (`Style`). `write_fixtures` renders the images committed under tests/data/ocr.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from models.ocr import DEFAULT_CHARSET

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
    # More shapes for fonts never seen (2026-11 retraining): oblique OCR-B, narrow, wide, bold,
    # slashed and dotted zeros, sans text faces.
    "OCRBL.otf": 1.0,
    "Cousine-Bold.ttf": 0.5,
    "Hack-Bold.ttf": 0.5,
    "NotoMono-Regular.ttf": 0.5,
    "LeagueMono-Regular.otf": 0.5,
    "LeagueMono-NarrowRegular.otf": 0.4,
    "LeagueMono-WideRegular.otf": 0.4,
    "FantasqueSansMono-Regular.ttf": 0.4,
    "Anonymous Pro.ttf": 0.5,
    "Hermit-medium.otf": 0.4,
    "agave-r-autohinted.ttf": 0.4,
    "3270-Regular.ttf": 0.3,
    "B612Mono-Regular.otf": 0.4,
    "Roboto-Regular.ttf": 0.4,
    "RobotoCondensed-Regular.ttf": 0.3,
    "OpenSans-Regular.ttf": 0.3,
    "Carlito-Regular.ttf": 0.3,
    "DejaVuSansCondensed.ttf": 0.3,
    "LiberationSansNarrow-Regular.ttf": 0.3,
    "Go-Bold.ttf": 0.3,
    # More weights, widths and obliques of the monospace families (2026-12 fine-tuning): the fonts never
    # seen differ from these in stroke weight, width and slant as much as in shape.
    "DejaVuSansMono-Oblique.ttf": 0.3,
    "LiberationMono-Italic.ttf": 0.3,
    "FreeMonoOblique.ttf": 0.3,
    "Cousine-Italic.ttf": 0.3,
    "Go-Mono-Italic.ttf": 0.3,
    "Hack-Italic.ttf": 0.3,
    "LeagueMono-Light.otf": 0.3,
    "LeagueMono-Medium.otf": 0.3,
    "LeagueMono-Bold.otf": 0.3,
    "LeagueMono-Condensed.otf": 0.3,
    "LeagueMono-ExtendedRegular.otf": 0.3,
    "LeagueMono-NarrowLight.otf": 0.2,
    "FantasqueSansMono-Bold.ttf": 0.3,
    "Hermit-light.otf": 0.3,
    "Hermit-bold.otf": 0.3,
    "agave-b-autohinted.ttf": 0.3,
    "Anonymous Pro B.ttf": 0.3,
    "Anonymous Pro Minus.ttf": 0.3,
    "3270SemiCondensed-Regular.ttf": 0.2,
    "B612Mono-Bold.otf": 0.3,
    "B612Mono-Italic.otf": 0.2,
}
# Never used in training: the held-out set measures reading a font the model has not seen.
HELDOUT_FONTS = ("JetBrainsMono-Regular.ttf", "Courier Prime Sans.otf")
MAIN_FONT = "OCRB.otf"
# Faces of the other print that training draws around some lines: sans, and serif families that the
# out-of-collection sets of training/ocr_evalsets.py do not use (they draw DejaVu/Liberation/Free
# Serif and Tinos there).
CONTEXT_FONTS = (
    "Lato-Regular.ttf",
    "Cantarell-Regular.otf",
    "FreeSans.ttf",
    "Arimo-Bold.ttf",
    "DejaVuSans-Bold.ttf",
    "Caladea-Regular.ttf",
    "Caladea-Bold.ttf",
    "EBGaramond12-Regular.otf",
    "Roboto-Medium.ttf",
    "OpenSans-Semibold.ttf",
    "Carlito-Italic.ttf",
    "EBGaramond08-Italic.otf",
    "Go-Medium.ttf",
)


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


# Letters that look like digits, and the digits they look like, weighted to the pairs most missed on
# the dev sets (2026-12: 0/O first, then 1/I, 5/S).
LOOKALIKES = "OOOOOIISSBZDQGU" + "000011558206"


def lookalike_line(rng: np.random.Generator) -> str:
    """Groups of look-alike letters mixed with digits (training only: the reader learns 0 from O in context).

    Half of the groups are codes: digits around a run of letters (`12OO5`, `AB0OI1`), as in serials
    and lots; the others are drawn from the look-alikes and the digits alone.
    """
    groups = []
    for _ in range(int(rng.integers(1, 6))):
        if rng.random() < 0.5:
            letters = "".join(rng.choice(list(LOOKALIKES[:15]), int(rng.integers(1, 4))))
            groups.append(
                _digits(rng, int(rng.integers(0, 5))) + letters + _digits(rng, int(rng.integers(1, 5)))
            )
        else:
            groups.append("".join(rng.choice(list(LOOKALIKES + "123456789"), int(rng.integers(2, 12)))))
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


def find_fonts(
    root: str | Path, names: list[str] | tuple[str, ...], packages: dict[str, str] | None = None
) -> dict[str, Path]:
    """Find font files by name under a folder; fail naming the missing ones and their packages.

    `packages` (font file -> Debian package) names what to install; without it the message points at
    the OCR training script's list.
    """
    found: dict[str, Path] = {}
    for path in sorted(Path(root).rglob("*")):
        if path.name in names and path.name not in found:
            found[path.name] = path
    missing = [n for n in names if n not in found]
    if missing:
        install = (
            "apt-get install " + " ".join(sorted({packages[n] for n in missing}))
            if packages
            else "install the packages listed in `python -m training.ocr --help`"
        )
        raise SystemExit(f"fonts not found under {root}: {', '.join(missing)}; {install}")
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
    context: tuple[float, ...] = ()  # other print: (gap, visible share) above, then below (cap heights)
    curve: float = 0.0  # bend of the paper: rows move by up to this many cap heights
    keystone: float = 1.0  # perspective: height of the right end over the left one
    shear: float = 0.0  # slant of the verticals (tan of the angle)
    context_font: str = ""
    # Printed rules with the other print: "level" (over the block, as the dev sets keep them) or "any"
    # (training since 2026-12: also slanted, crossing the glyph tops, or under the block).
    rules: str = "level"


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
    if style.context and style.context_font:
        from training.ocr_distort import add_context

        ink = add_context(ink, style, cap, rng)
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
    if style.curve or style.keystone != 1.0 or style.shear:
        from training.ocr_distort import warp

        ink = warp(ink, style, cap)
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


def sample_block(rng: np.random.Generator) -> list[str]:
    """Usually one line; sometimes a band of two or three lines."""
    n = 1 if rng.random() < 0.8 else int(rng.integers(2, 4))
    return [lookalike_line(rng) if rng.random() < 0.1 else random_text(rng) for _ in range(n)]
