"""Teachable Machine models added and removed while serving (POST / DELETE /api/classifier/models).

An upload is unpacked (models.converters.archive checks the zip first), converted, checked and
moved into a classifier folder in one rename, then the folder is marked changed so that every
worker reloads its classifiers (models.registry.refresh). Whatever fails leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Collection
from pathlib import Path
from typing import BinaryIO

import numpy as np

from models.converters import find_export
from models.converters.archive import ExportRefused, unpack_export
from models.registry import mark_changed
from models.runtime import ModelFileError
from models.teachable import TeachableModel, lock, source_sha256

log = logging.getLogger(__name__)

# An uploaded model's folder holds this record; only such folders may be removed through the API.
UPLOAD_RECORD = "upload.json"
# A model's name is its folder's name and a URL part: lower-case letters, digits, '-' and '_'.
SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,47}$")
# An unfinished upload's folder older than this was left by a worker that died; it is removed.
LEFTOVER_SECONDS = 3600


def check_name(name: str, taken: Collection[str] = ()) -> str:
    """Return a new model's name, or refuse one that is not a safe slug or is already used."""
    if not isinstance(name, str) or not SLUG.match(name):
        raise ExportRefused(
            "the name must be 1 to 48 lower-case letters, digits, '-' or '_', starting with a letter or digit",
            code="invalid_name",
        )
    if name in taken:
        raise ExportRefused(f"a model named '{name}' exists already", status=409, code="model_exists")
    return name


def sweep_leftovers(folder: Path) -> None:
    """Remove what an upload or a removal left when its worker died mid-way."""
    now = time.time()
    for entry in folder.iterdir():
        removed = entry.name.startswith(".removed-")
        stale = entry.name.startswith(".upload-") and now - entry.stat().st_mtime > LEFTOVER_SECONDS
        if (removed or stale) and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)


def check_model(model: TeachableModel) -> None:
    """Run one inference and check it gives one finite score per label."""
    try:
        y = np.asarray(model.predict(model.warmup_input()))
    except Exception as exc:  # ONNX Runtime raises its own types for a graph that cannot run
        raise ModelFileError(f"the converted model does not run: {exc}") from None
    if y.shape != (1, len(model.labels)) or not np.all(np.isfinite(y)):
        raise ModelFileError(
            f"the model answers an array of shape {list(y.shape)}; expected one finite score for each of "
            f"its {len(model.labels)} labels"
        )
    model.warm = True


def install_export(
    archive: BinaryIO | Path, name: str, folder: Path, *, taken: Collection[str] = (), threads: int = 1
) -> dict:
    """Unpack, convert and check an uploaded export, then move it into folder/name in one rename.

    Every failure leaves the folder as it was; success marks the folder changed, so that every
    worker serves the new model on its next classifier request.
    """
    check_name(name, taken)
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    sweep_leftovers(folder)
    work = Path(tempfile.mkdtemp(prefix=".upload-", dir=folder))
    try:
        files = unpack_export(archive, work)
        try:
            fmt, _ = find_export(work)
        except ModelFileError as exc:
            message = str(exc).replace(f"{work.name}: ", "")
            raise ExportRefused(
                f"the zip is not a whole export: {message}", code="incomplete_export"
            ) from None
        try:
            model = TeachableModel(name, work, threads=threads)
            check_model(model)
        except ExportRefused:
            raise
        except ModelFileError as exc:
            # Say what is wrong in the export's own terms, without this server's paths.
            message = str(exc).replace(f"{work}{os.sep}", "").replace(str(work), name)
            raise ExportRefused(message, status=422, code="invalid_model") from None
        record = {
            "name": name,
            "format": model.source_format,
            "files": sorted(files),
            "labels": list(model.labels),
            "installed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "source_sha256": source_sha256(model.source),
        }
        (work / UPLOAD_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        os.chmod(work, 0o755)  # mkdtemp makes it 0700; the model is as readable as any other
        with lock(folder):
            target = folder / name
            try:  # a folder there already (made on another node, say) makes the rename fail
                if target.exists() or target.is_symlink():
                    raise FileExistsError(target)
                os.rename(work, target)
            except OSError as exc:
                if not isinstance(exc, FileExistsError) and exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                raise ExportRefused(
                    f"a model named '{name}' exists already", status=409, code="model_exists"
                ) from None
            mark_changed(folder)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        if created:
            with contextlib.suppress(OSError):  # not empty: another upload is using it
                folder.rmdir()
        raise
    log.info("model %s installed in %s (%s, %d labels)", name, folder, fmt, len(model.labels))
    return record


def is_uploaded(folder: Path) -> bool:
    """Tell whether a classifier folder was added through the API (and so may be removed through it)."""
    return (Path(folder) / UPLOAD_RECORD).is_file()


def remove_export(name: str, folder: Path) -> None:
    """Remove a model added through the API: one rename out of sight, then delete it."""
    folder = Path(folder)
    target = folder / name
    trash = folder / f".removed-{uuid.uuid4().hex}"
    with lock(folder):
        if not SLUG.match(name) or not target.is_dir() or target.is_symlink():
            raise ExportRefused(f"there is no model named '{name}' here", status=404, code="unknown_model")
        if not is_uploaded(target):
            raise ExportRefused(
                f"the model '{name}' was not added through the API; remove its folder by hand",
                status=409,
                code="not_removable",
            )
        os.rename(target, trash)
        mark_changed(folder)
    shutil.rmtree(trash, ignore_errors=True)
    log.info("model %s removed from %s", name, folder)
