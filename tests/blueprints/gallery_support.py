"""Helpers of the gallery tests: an app with its own store, uploads, thumbnails, failure counts."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
from prometheus_client import REGISTRY

from app import create_app
from store import ImageStore
from tests.conftest import hide_environment, png_bytes

EXIF_JPEG = Path(__file__).parents[1] / "data" / "gallery" / "exif_gps.jpg"


def failures(reason: str) -> float:
    """Return the image_store_failures_total count for a reason."""
    return REGISTRY.get_sample_value("image_store_failures_total", {"reason": reason}) or 0.0


def photo(width: int = 120, height: int = 80) -> bytes:
    """A small RGB PNG with some detail."""
    y, x = np.mgrid[0:height, 0:width]
    return png_bytes(np.stack([x % 256, y % 256, (x * y) % 256], axis=-1).astype(np.uint8))


def upload(client, data: bytes = b"", name: str = "photo.png", **fields):
    """POST /images with a multipart file."""
    form = {"file": (io.BytesIO(data or photo()), name), **fields}
    return client.post("/images", data=form, content_type="multipart/form-data")


def wait_for_thumbnail(client, image_id: str, timeout: float = 30.0):
    """Poll /vignette until it is not 202; return the last response."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/vignette/{image_id}")
        if response.status_code != 202 or time.monotonic() > deadline:
            return response
        time.sleep(0.05)


def build_app(monkeypatch, tmp_path: Path, **overrides):
    """Build an app with its own store in tmp_path, ignoring the developer's environment."""
    hide_environment(monkeypatch)
    config = {
        "LOG_LEVEL": "WARNING",
        "SAVE_IMAGES": True,
        "IMAGE_DIR": str(tmp_path / "saved"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'images.db'}",
        "THUMBNAIL_SIZE": 64,
    }
    config.update(overrides)
    return create_app(config)


def store_of(client) -> ImageStore:
    return client.application.extensions["store"]
