"""Fixtures of the gallery tests: one app per module, a fresh store per test."""

from __future__ import annotations

import pytest

from store import ImageStore
from tests.blueprints.gallery_support import build_app


@pytest.fixture(scope="module")
def shared_app(tmp_path_factory):
    """One app for the module (loading every model per test would dominate the run time)."""
    with pytest.MonkeyPatch.context() as mp:
        app = build_app(mp, tmp_path_factory.mktemp("gallery"))
    yield app
    app.extensions["store"].close()


@pytest.fixture
def gallery_app(shared_app, tmp_path):
    """The shared app with a fresh, empty store in tmp_path, built as init_app builds it."""
    original = shared_app.extensions["store"]
    store = ImageStore(f"sqlite:///{tmp_path / 'images.db'}", tmp_path / "saved", thumbnail_size=64)
    store.start_thumbnails()
    shared_app.extensions["store"] = store
    yield shared_app
    store.close()
    shared_app.extensions["store"] = original


@pytest.fixture
def gallery(gallery_app):
    """A test client of gallery_app."""
    return gallery_app.test_client()
