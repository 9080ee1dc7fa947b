"""The export for retraining: the labelled images and a labels.csv, as one zip.

A text cell that a spreadsheet would read as a formula (starting with = + - @, a tab or a carriage
return) is written with a ' before it, as OWASP's CSV injection advice says; `unescape_cell`
(and training/gallery_export.py) take it off again.
"""

from __future__ import annotations

import csv
import io
import logging
import zipfile
from typing import IO, TYPE_CHECKING

from sqlalchemy import select

from store.records import StoredImage, extension_for
from store.schema import SUMMARY_COLUMNS, images

if TYPE_CHECKING:
    from store.images import ImageStore

log = logging.getLogger(__name__)

EXPORT_CSV = "labels.csv"
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
EXPORT_COLUMNS = (
    "file",
    "label",
    "id",
    "model",
    "prediction",
    "confidence",
    "endpoint",
    "created_at",
    "format",
    "width",
    "height",
    "sha256",
)


def safe_cell(value: object) -> object:
    """Return a cell that a spreadsheet shows as text: a formula-like text gets a ' before it."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def unescape_cell(value: str) -> str:
    """Return a cell's text as stored (the inverse of safe_cell)."""
    return value[1:] if value.startswith("'") and value[1:].startswith(FORMULA_STARTS) else value


def export_zip(store: ImageStore, out: IO[bytes], *, model: str | None = None) -> int:
    """Write the labelled images (of one model, or all) as a zip; return how many.

    The zip holds `labels.csv` (UTF-8, header row, columns EXPORT_COLUMNS; `file` is the
    path inside the zip) and the original files under `images/<id>.<ext>`.
    """
    store.ensure_schema()
    query = (
        select(*SUMMARY_COLUMNS).where(images.c.label.is_not(None)).order_by(images.c.created_at, images.c.id)
    )
    if model is not None:
        query = query.where(images.c.model == model)
    with store.engine.connect() as conn:
        records = [StoredImage.from_row(r) for r in conn.execute(query).mappings()]
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    count = 0
    with zipfile.ZipFile(out, "w") as archive:
        for rec in records:
            member = f"images/{rec.id}.{extension_for(rec.format)}"
            try:
                data = store.file_path(rec).read_bytes()
            except OSError as exc:
                log.error("export: image %s is in the database but its file is unreadable: %s", rec.id, exc)
                continue
            # Images are already compressed: storing them is as small and much faster.
            archive.writestr(member, data, compress_type=zipfile.ZIP_STORED)
            writer.writerow(
                safe_cell(cell)
                for cell in (
                    member,
                    rec.label,
                    rec.id,
                    rec.model or "",
                    rec.prediction or "",
                    "" if rec.confidence is None else rec.confidence,
                    rec.endpoint,
                    rec.created_at.isoformat(),
                    rec.format,
                    rec.width,
                    rec.height,
                    rec.sha256,
                )
            )
            count += 1
        archive.writestr(EXPORT_CSV, table.getvalue().encode("utf-8"), compress_type=zipfile.ZIP_DEFLATED)
    return count
