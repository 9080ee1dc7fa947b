"""Training glyphs for the OCR classifier: render lines, cut them with the serving segmentation, label.

`build_dataset` renders in worker processes (each chunk with its own seed, so runs repeat);
`glyphs_from_image` labels the glyphs of lines that cut into their number of characters, and
glyphs of other print around them with REJECT; `load_lines_dir` reads real labelled lines.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import cv2
import numpy as np

from models.ocr import GLYPH_SIZE, segment
from training.ocr_distort import augment
from training.ocr_render import (
    CHARSET,
    CONTEXT_FONTS,
    TRAIN_FONTS,
    clean_style,
    degraded_style,
    find_fonts,
    render,
    sample_block,
)

# The class after the charset: glyph windows cut from other print (a document's text around the line).
REJECT = len(CHARSET)


def glyphs_from_image(
    image: np.ndarray, lines: list[str], rng: np.random.Generator | None = None
) -> tuple[list[np.ndarray], list[int], int]:
    """Cut an image with the serving segmentation; label glyphs of lines that cut cleanly.

    With `rng` the image may hold other print around the lines: the run of segmented lines whose
    lengths match the text is labelled, and glyphs of lines outside it (other print) get the
    REJECT label, one in two kept. Returns glyph images, their class indices, and how many lines
    were cut right.
    """
    seg = segment(image)
    xs: list[np.ndarray] = []
    ys: list[int] = []
    good = 0
    counts = [len(t.replace(" ", "")) for t in lines]
    found = [len(g) for g in seg.lines]
    start = 0
    if found != counts:
        if rng is None:
            return xs, ys, 0
        runs = [k for k in range(len(found) - len(counts) + 1) if found[k : k + len(counts)] == counts]
        if not runs:
            return xs, ys, 0
        start = runs[0]
        for k, glyphs in enumerate(seg.lines):
            if k < start or k >= start + len(counts):
                kept = [g.image for g in glyphs if rng.random() < 0.5]
                xs.extend(kept)
                ys.extend([REJECT] * len(kept))
    for glyphs, text in zip(seg.lines[start : start + len(counts)], lines, strict=True):
        chars = text.replace(" ", "")
        if len(glyphs) != len(chars) or any(c not in CHARSET for c in chars):
            continue
        good += 1
        xs.extend(g.image for g in glyphs)
        ys.extend(CHARSET.index(c) for c in chars)
    return xs, ys, good


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
    context_fonts = [fonts[n] for n in CONTEXT_FONTS]
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
        style = augment(style, rng, context_fonts)
        image = render(block, font, style, rng)
        gx, gy, good = glyphs_from_image(image, block, rng)
        xs.extend(gx)
        ys.extend(gy)
        lines_total += len(block)
        lines_good += good
        if not quiet and (i + 1) % 500 == 0:
            rate = (i + 1) / (time.perf_counter() - start)
            print(f"  rendered {i + 1}/{n_images} images ({rate:.1f}/s), {len(xs)} glyphs", flush=True)
    stats = {
        "lines": lines_total,
        "lines_cut_right": lines_good,
        "rejects": int(sum(y == REJECT for y in ys)),
    }
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
    fonts = find_fonts(data, [*TRAIN_FONTS, *CONTEXT_FONTS])
    x, y, stats = make_glyphs(fonts, n, np.random.default_rng(seed), clean_share, quiet=True)
    return (x * 255).round().astype(np.uint8), y, stats


def build_dataset(data: str, n_images: int, seed: int, workers: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Render n_images in chunks (in `workers` processes); return uint8 glyphs, labels, stats."""
    chunk = 250
    jobs = [(data, min(chunk, n_images - i), seed * 100003 + i, 0.2) for i in range(0, n_images, chunk)]
    xs, ys, total = [], [], {"lines": 0, "lines_cut_right": 0, "rejects": 0}
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
