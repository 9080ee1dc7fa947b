"""Where classifiers added through the API live, and which of them the API may remove."""

from __future__ import annotations

from pathlib import Path

from flask import current_app

from models import registry as model_registry
from models.uploads import is_uploaded


def upload_folder() -> Path | None:
    """Return the folder new classifiers go to (the first of CLASSIFIER_DIRS), or None when there is none."""
    folders = model_registry.classifier_folders(current_app)
    return folders[0] if folders else None


def export_folder(spec: dict) -> Path:
    """Return the folder of a classifier folder's model (its spec names the main file or the folder)."""
    path = Path(spec.get("path", ""))
    return path if path.suffix == "" else path.parent


def removable(name: str, spec: dict, uploads: Path) -> bool:
    """Tell whether a classifier was added through the API (so it may be removed through it)."""
    if name in current_app.config["MODELS"]:
        return False
    folder = export_folder(spec)
    return folder.parent.resolve() == uploads.resolve() and is_uploaded(folder)
