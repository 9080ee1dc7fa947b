"""Read the gallery's export of labelled images (GET /images/export?model=NAME) for retraining.

The zip holds `labels.csv` (UTF-8 with a header row; `file` is the member's path in the zip,
`label` the correct answer, then id, model, prediction, confidence, endpoint, created_at, format,
width, height, sha256) and the original files under `images/`. The training scripts take it as
`--extra PATH`.
"""

from __future__ import annotations

import csv
import io
import os
import zipfile

from PIL import Image, ImageOps

from models.image import rgb_on_white

LABELS_CSV = "labels.csv"


class ExportFormatError(ValueError):
    """A file that is not a gallery export."""


def load_labelled_images(zip_path: str | os.PathLike) -> list[tuple[Image.Image, str]]:
    """Return (image, label) pairs from an export: RGB, upright, transparency on white."""
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ExportFormatError(f"{zip_path}: not a gallery export zip ({exc})") from exc
    with archive:
        names = set(archive.namelist())
        if LABELS_CSV not in names:
            raise ExportFormatError(f"{zip_path}: no {LABELS_CSV} inside; is it a gallery export?")
        rows = csv.DictReader(io.StringIO(archive.read(LABELS_CSV).decode("utf-8-sig")))
        missing = {"file", "label"} - set(rows.fieldnames or ())
        if missing:
            raise ExportFormatError(
                f"{zip_path}: {LABELS_CSV} lacks the column(s) {', '.join(sorted(missing))}"
            )
        pairs = []
        for line, row in enumerate(rows, start=2):
            member, label = row["file"], row["label"]
            # The export writes a formula-like label with a ' before it (store.export.safe_cell).
            if label.startswith("'") and label[1:].startswith(("=", "+", "-", "@", "\t", "\r")):
                label = label[1:]
            # Read only members the CSV names and that exist: nothing is extracted to disk.
            if member not in names or not label:
                raise ExportFormatError(f"{zip_path}: {LABELS_CSV} line {line} names no image or no label")
            with Image.open(io.BytesIO(archive.read(member))) as img:
                pairs.append((_as_rgb(img), label))
    return pairs


def _as_rgb(img: Image.Image) -> Image.Image:
    """Return the pixels a model saw: EXIF orientation applied, transparency composited on white."""
    return rgb_on_white(ImageOps.exif_transpose(img))
