"""Shared fixtures: a fresh app per test, with the real committed models and saving off."""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app import create_app

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def base_app_config(tmp_path_factory) -> dict:
    """Settings every test app starts from: no environment leakage, nothing saved."""
    return {
        "SAVE_IMAGES": False,
        "LOG_LEVEL": "WARNING",
        "IMAGE_DIR": str(tmp_path_factory.mktemp("saved_images")),
        "DATABASE_URL": f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}",
    }


# Settings read from the environment besides VISION_*: a test app must not see the developer's.
ENV_KEYS = ("DATABASE_URL", "CELERY_BROKER_URL", "PORT", "HOST")


def hide_environment(mp: pytest.MonkeyPatch) -> None:
    """Remove the developer's own settings (VISION_*, DATABASE_URL, ...) from the environment."""
    for key in list(os.environ):
        if key.startswith("VISION_") or key in ENV_KEYS:
            mp.delenv(key, raising=False)


@pytest.fixture
def app(base_app_config, monkeypatch):
    """Build a fresh app, ignoring the developer's own environment."""
    hide_environment(monkeypatch)
    return create_app(base_app_config)


@pytest.fixture
def client(app):
    """A test client for the app."""
    return app.test_client()


def png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    """Encode an array as PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    """Wrap bytes in a base64 data URL."""
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"
