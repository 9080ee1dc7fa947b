"""Render the images committed under tests/data/ocr (python -m training.ocr --fixtures DIR)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from training.ocr_render import (
    HELDOUT_FONTS,
    MAIN_FONT,
    Style,
    degraded_style,
    find_fonts,
    payment_line,
    random_text,
    render,
)

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
