"""Score OCR on held-out renders: exact lines, characters, segmentation.

The held-out sets are rendered with their own seed, partly in fonts never used in training, and
read end to end by the served code (models.ocr.OcrModel). The training script puts these figures
in the model card; training/ocr_peers.py reads the same lines with Tesseract and RapidOCR.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.ocr_render import (
    CHARSET,
    HELDOUT_FONTS,
    MAIN_FONT,
    clean_style,
    degraded_style,
    find_fonts,
    payment_line,
    random_text,
    render,
)


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


DEV_SEED = 515_151
# The dev sets' faces, fixed (2026-12) so that adding training fonts does not change the sets the
# before/after comparisons are made on: the monospace training faces other than OCR-B as of then
# (fixed pitch is what the segmentation assumes, and what the out-of-collection fonts are), and the
# context faces as of then. All are training fonts; none is held out or out of collection.
DEV_FONTS = (
    "OCRBS.otf", "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "LiberationMono-Regular.ttf",
    "LiberationMono-Bold.ttf", "FreeMono.ttf", "FreeMonoBold.ttf", "NotoSansMono-Regular.ttf",
    "NotoSansMono-Bold.ttf", "Go-Mono.ttf", "Go-Mono-Bold.ttf", "Hack-Regular.ttf", "Inconsolata.otf",
    "Cousine-Regular.ttf", "OCRBL.otf", "Cousine-Bold.ttf", "Hack-Bold.ttf", "NotoMono-Regular.ttf",
    "LeagueMono-Regular.otf", "LeagueMono-NarrowRegular.otf", "LeagueMono-WideRegular.otf",
    "FantasqueSansMono-Regular.ttf", "Anonymous Pro.ttf", "Hermit-medium.otf", "agave-r-autohinted.ttf",
    "3270-Regular.ttf", "B612Mono-Regular.otf",
)  # fmt: skip
DEV_CONTEXT_FONTS = (
    "Lato-Regular.ttf", "Cantarell-Regular.otf", "FreeSans.ttf", "Arimo-Bold.ttf", "DejaVuSans-Bold.ttf",
    "Caladea-Regular.ttf", "Caladea-Bold.ttf", "EBGaramond12-Regular.otf",
)  # fmt: skip
# Faces for the generalization development sets (generalization_sets): in no training, held-out or
# out-of-collection list (tests/training/test_ocr_training.py checks). Debian: fonts-monoid,
# fonts-oxygen, fonts-sil-gentium, fonts-cmu.
GEN_SEED = 626_262
GEN_FONTS = ("Monoid-Regular.ttf", "OxygenMono-Regular.ttf")
GEN_CONTEXT_FONTS = ("Gentium-R.ttf", "cmunss.ttf")


def _dev_set(
    name: str,
    kind: str,
    fonts: list[Path],
    context: list[Path],
    n: int,
    rng: np.random.Generator,
    description: str,
) -> HeldOut:
    """Render one development set of `kind` (context, photo, clean or fonts) with training's renderer."""
    from dataclasses import replace

    images, lines = [], []
    for i in range(n):
        text = payment_line(rng) if i % 2 == 0 else random_text(rng)
        font = fonts[i % len(fonts)]
        style = clean_style(rng, 300.0) if kind == "clean" else degraded_style(rng)
        if kind in ("context", "fonts"):
            # Gaps from the line's highest and lowest ink (brackets): touching or nearly.
            above = (float(rng.uniform(-0.17, 0.2)), float(rng.uniform(0.15, 0.8)))
            below = (float(rng.uniform(0.0, 0.4)), float(rng.uniform(0.15, 0.6)))
            style = replace(
                style,
                context=above if i % 3 else above + below,
                context_font=str(context[i % len(context)]),
            )
        if kind in ("photo", "fonts"):
            style = replace(
                style,
                curve=float(rng.uniform(-0.5, 0.5)),
                keystone=float(np.exp(rng.uniform(-0.25, 0.25))),
                shear=float(rng.uniform(-0.12, 0.12)),
            )
        images.append(render([text], font, style, rng))
        lines.append([text])
    return HeldOut(name, description, images, lines)


def dev_sets(data: str | Path, n: int = 100, seed: int = DEV_SEED) -> list[HeldOut]:
    """Render the development sets that segmentation and decoding choices are made on.

    Training's own renderer and distortions (training/ocr_render.py, ocr_distort.py) with a seed of
    their own, training fonts only (never HELDOUT_FONTS nor the out-of-collection generator and its
    fonts): other print touching or near the line, photo geometry, clean lines of other layouts.
    """
    fonts = find_fonts(data, [MAIN_FONT, *DEV_FONTS, *DEV_CONTEXT_FONTS])
    context = [fonts[name] for name in DEV_CONTEXT_FONTS]
    return [
        _dev_set(
            f"dev-{kind}",
            kind,
            [fonts[name] for name in DEV_FONTS] if kind == "fonts" else [fonts[MAIN_FONT]],
            context,
            n,
            np.random.default_rng(seed + k),
            "development: training renderer, own seed",
        )
        for k, kind in enumerate(("context", "photo", "clean", "fonts"))
    ]


def generalization_sets(data: str | Path, n: int = 300, seed: int = GEN_SEED) -> list[HeldOut]:
    """Development sets in faces that neither training nor any scored set uses (GEN_FONTS).

    The dev sets above are training's fonts and neighbour faces: a change that helps a font or a
    neighbour never seen does not show there. These do, and stay development sets (choices may be
    made on them; the held-out and out-of-collection sets stay out of every choice).
    """
    fonts = find_fonts(data, [MAIN_FONT, *GEN_FONTS, *GEN_CONTEXT_FONTS, *DEV_CONTEXT_FONTS])
    return [
        _dev_set(
            "gen-fonts",
            "fonts",
            [fonts[name] for name in GEN_FONTS],
            [fonts[name] for name in DEV_CONTEXT_FONTS],
            n,
            np.random.default_rng(seed),
            "development: monospace faces never trained on (" + ", ".join(GEN_FONTS) + "), dev-fonts' style",
        ),
        _dev_set(
            "gen-context",
            "context",
            [fonts[MAIN_FONT]],
            [fonts[name] for name in GEN_CONTEXT_FONTS],
            n,
            np.random.default_rng(seed + 1),
            "development: OCR-B with other print in faces never trained on ("
            + ", ".join(GEN_CONTEXT_FONTS)
            + "), dev-context's style",
        ),
    ]


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


def _read(model, image: np.ndarray) -> dict:
    """Read one image; an image the server answers with a 4xx (e.g. too much noise) reads nothing."""
    from models.runtime import ModelInputError

    try:
        return model(image)
    except ModelInputError:
        return {"lines": []}


def evaluate(model_path: Path, sets: list[HeldOut], failures: int = 5) -> dict:
    """Read every held-out set with the served model (ONNX, the server's own code) and score it."""
    from models.ocr import OcrModel

    model = OcrModel("ocr", model_path)
    out = {}
    for s in sets:
        start = time.perf_counter()
        results = [_read(model, image) for image in s.images]
        ms = 1000 * (time.perf_counter() - start) / max(1, len(s.images))
        read = [[line["text"] for line in r["lines"]] for r in results]
        per_class, cut_right, total = per_class_accuracy(s.lines, results)
        out[s.name] = {
            **score_lines(s.lines, read),
            "description": s.description,
            "per_class": per_class,
            "segmentation": 100 * cut_right / max(total, 1),
            "ms_per_image": ms,
            "failures": [(w, g) for w, g in zip(s.lines, read, strict=True) if w != g][:failures],
        }
        r = out[s.name]
        print(
            f"  {s.name}: lines {r['line_accuracy']:.1f}% exact, chars {r['char_accuracy']:.2f}%, "
            f"cut right {r['segmentation']:.1f}%, {ms:.0f} ms/image",
            flush=True,
        )
    return out


def main(argv: list[str] | None = None) -> None:
    """Score the model on the development sets (where segmentation and decoding choices are made)."""
    import argparse

    from config import served_path

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--data", default="/usr/share/fonts")
    parser.add_argument(
        "--model", default=str(served_path("ocr")), help="default: the served file (config.py)"
    )
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--failures", type=int, default=0, help="print this many failures per set")
    parser.add_argument(
        "--generalization",
        action="store_true",
        help="the sets in faces never trained on (generalization_sets, --n lines each) instead",
    )
    args = parser.parse_args(argv)
    import cv2

    cv2.setNumThreads(1)
    sets = generalization_sets(args.data, args.n) if args.generalization else dev_sets(args.data, args.n)
    result = evaluate(Path(args.model), sets, failures=max(5, args.failures))
    for name, row in result.items():
        for want, got in row["failures"][: args.failures]:
            print(f"  {name}: want {want} got {got}")


if __name__ == "__main__":
    main()
