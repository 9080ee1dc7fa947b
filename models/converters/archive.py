"""Unpack the zip Teachable Machine's "Download my model" gives, checking every entry before writing any.

The zip is hostile until proven otherwise: its entry count, names, kinds and declared sizes are
all checked from the central directory before one byte is unpacked, and unpacking stops at the
declared size (zipfile checks each entry's CRC and length), so a zip bomb costs nothing.
"""

from __future__ import annotations

import re
import stat
import zipfile
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from models.runtime import ModelFileError

# A Teachable Machine zip holds 2 or 3 files (keras_model.h5 + labels.txt; model.json +
# weights.bin + metadata.json; a .tflite + labels.txt); a few more leave room for sharded weights.
MAX_ENTRIES = 32
# Its files total 2-10 MB (MobileNet at alpha 0.35 to 1.0); 64 MiB refuses only what no export is.
MAX_UNPACKED_BYTES = 64 * 1024 * 1024
# Weights barely compress (x1.1) and model.json about x10; a zip bomb reaches x1000.
MAX_RATIO = 50
# Entries smaller than this may compress better (a labels.txt of repeated names) without harm.
RATIO_FLOOR_BYTES = 1024 * 1024
# The file names an export holds: letters, digits, '.', '_', '-', with a known suffix.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
SUFFIXES = frozenset({".h5", ".json", ".bin", ".tflite", ".txt"})
# What a Mac's zip tool adds beside the files; skipped, never unpacked.
JUNK = re.compile(r"(^|/)(__MACOSX/|\.DS_Store$)")
CHUNK = 1 << 20


class ExportRefused(ModelFileError):
    """An uploaded export that is refused, with the HTTP status and code that say why."""

    def __init__(self, message: str, *, status: int = 400, code: str = "invalid_archive"):
        super().__init__(message)
        self.status = status
        self.code = code


def too_large(message: str) -> ExportRefused:
    """Return the error for a zip that would unpack to too much."""
    return ExportRefused(message, status=413, code="archive_too_large")


def check_name(raw: str) -> PurePosixPath | None:
    """Return an entry's path as a relative POSIX path, None for a folder or junk, or refuse it."""
    if "\\" in raw or "\x00" in raw or raw.startswith("/") or re.match(r"^[A-Za-z]:", raw):
        raise ExportRefused(f"the zip entry {raw!r} is not a relative path inside the zip")
    path = PurePosixPath(raw)
    if any(part in ("..", ".", "") for part in raw.rstrip("/").split("/")):
        raise ExportRefused(f"the zip entry {raw!r} points outside the folder it unpacks to")
    if raw.endswith("/") or JUNK.search(raw):
        return None
    return path


def plan(archive: zipfile.ZipFile) -> list[tuple[zipfile.ZipInfo, str]]:
    """Check every entry of the zip and return (entry, file name) for each file to unpack."""
    entries = archive.infolist()
    if len(entries) > MAX_ENTRIES:
        raise too_large(
            f"the zip holds {len(entries)} entries; an export holds a few (at most {MAX_ENTRIES})"
        )
    files: list[tuple[zipfile.ZipInfo, PurePosixPath]] = []
    packed = unpacked = 0
    for info in entries:
        path = check_name(info.filename)
        kind = stat.S_IFMT(info.external_attr >> 16)
        if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
            raise ExportRefused(f"the zip entry {info.filename!r} is a link or a device, not a file")
        if path is None:
            continue
        if info.flag_bits & 0x1:
            raise ExportRefused(f"the zip entry {info.filename!r} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ExportRefused(f"the zip entry {info.filename!r} uses a compression other than deflate")
        if info.file_size > MAX_UNPACKED_BYTES:
            raise too_large(f"the zip entry {info.filename!r} declares {info.file_size} bytes")
        if info.file_size > RATIO_FLOOR_BYTES and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise too_large(
                f"the zip entry {info.filename!r} would unpack {info.file_size // max(info.compress_size, 1)}"
                f" times larger than it is packed (a zip bomb?)"
            )
        packed += info.compress_size
        unpacked += info.file_size
        files.append((info, path))
    if unpacked > MAX_UNPACKED_BYTES:
        raise too_large(
            f"the zip would unpack to {unpacked} bytes, over the {MAX_UNPACKED_BYTES >> 20} MiB allowed"
        )
    if unpacked > RATIO_FLOOR_BYTES and unpacked > MAX_RATIO * max(packed, 1):
        raise too_large("the zip would unpack far larger than it is packed (a zip bomb?)")
    # Teachable Machine puts the files at the top; a zipped folder of them is taken as well.
    folders = {path.parts[:-1] for _, path in files}
    if len(folders) > 1 or any(len(parts) > 1 for parts in folders):
        raise ExportRefused("the zip's files must sit together, at its top or in one folder")
    names = [path.name for _, path in files]
    for name in names:
        if not NAME.match(name) or PurePosixPath(name).suffix.lower() not in SUFFIXES:
            raise ExportRefused(
                f"the zip holds {name!r}, which is no part of a Teachable Machine export "
                f"(files named with letters, digits, '.', '_', '-' ending in {', '.join(sorted(SUFFIXES))})"
            )
    if len({n.lower() for n in names}) != len(names):
        raise ExportRefused("the zip holds the same file name twice")
    if not files:
        raise ExportRefused("the zip holds no files")
    return [(info, path.name) for info, path in files]


def unpack_export(source: BinaryIO | Path, folder: Path) -> list[str]:
    """Check a Teachable Machine zip and unpack its files into an empty folder; return their names."""
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise ExportRefused(f"the upload is not a readable zip file: {exc}") from None
    with archive:
        files = plan(archive)
        for info, name in files:
            target = folder / name
            try:
                # "x": never follow or replace anything already there.
                with archive.open(info) as src, open(target, "xb") as dst:
                    written = 0
                    while chunk := src.read(CHUNK):
                        written += len(chunk)
                        if written > info.file_size:  # zipfile stops at the declared size; belt and braces
                            raise too_large(f"the zip entry {info.filename!r} is larger than it declares")
                        dst.write(chunk)
            except ExportRefused:
                raise
            except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
                raise ExportRefused(f"cannot unpack {info.filename!r} from the zip: {exc}") from None
    return [name for _, name in files]
