"""Shared fixtures: a fresh app per test, with the real committed models and saving off."""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app import create_app
from models import registry as model_registry

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


def file_stamp(value: Path | None) -> list | None:
    """Return (mtime, size) of a configured file, so a rewritten file is never served from the cache."""
    try:
        stat = os.stat(value)
    except (TypeError, OSError):
        return None
    return [stat.st_mtime_ns, stat.st_size]


@pytest.fixture(scope="session", autouse=True)
def shared_registries():
    """Load each distinct set of models once per test session, not once per test app.

    The registry is immutable once built, so apps with the same model settings can share it, as
    the threads of one worker do. Building it loads and warms every ONNX model (about 1 s); the
    suite builds hundreds of apps. The key includes each model file's mtime and size, so a test
    that writes a model file gets a fresh load.
    """
    build = model_registry.build_registry
    cache: dict[str, model_registry.Registry] = {}

    def build_once(specs: dict[str, dict], **kwargs):
        stamps = {
            name: {
                key: file_stamp(model_registry.resolve_path(kwargs["root"], v))
                for key, v in spec.items()
                if isinstance(v, str)
            }
            for name, spec in specs.items()
            if isinstance(spec, dict)
        }
        key = json.dumps([specs, stamps, kwargs], sort_keys=True, default=str)
        if key not in cache:
            cache[key] = build(specs, **kwargs)
        return cache[key]

    build_once.__wrapped__ = build
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(model_registry, "build_registry", build_once)
        yield cache


@pytest.fixture
def fresh_registries(monkeypatch):
    """Build every app's registry anew in this test (for tests about loading itself)."""
    monkeypatch.setattr(model_registry, "build_registry", model_registry.build_registry.__wrapped__)


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
