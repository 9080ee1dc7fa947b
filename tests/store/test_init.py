"""store.init_app: an app that keeps nothing writes nothing, not even the default database's folder."""

from __future__ import annotations

import flask

from app import create_app
from tests.conftest import hide_environment


def test_the_instance_folder_is_made_only_when_the_default_database_is_opened(tmp_path, monkeypatch):
    hide_environment(monkeypatch)
    instance = tmp_path / "instance"
    monkeypatch.setattr(flask.Flask, "auto_find_instance_path", lambda self: str(instance))
    images = tmp_path / "images"
    app = create_app({"SAVE_IMAGES": False, "LOG_LEVEL": "ERROR", "IMAGE_DIR": str(images), "MODELS": {}})
    client = app.test_client()
    assert client.get("/health").status_code == 200
    assert not instance.exists() and not images.exists()  # built and serving: nothing written
    assert client.get("/images").status_code == 200  # the gallery opens the default database
    assert (instance / "images.db").is_file()
    app.extensions["store"].close()


def test_with_saving_on_the_database_is_opened_at_start(tmp_path, monkeypatch):
    hide_environment(monkeypatch)
    instance = tmp_path / "instance"
    monkeypatch.setattr(flask.Flask, "auto_find_instance_path", lambda self: str(instance))
    app = create_app(
        {"SAVE_IMAGES": True, "LOG_LEVEL": "ERROR", "IMAGE_DIR": str(tmp_path / "i"), "MODELS": {}}
    )
    assert (instance / "images.db").is_file()  # a broken database shows at start, not at the first image
    app.extensions["store"].close()
