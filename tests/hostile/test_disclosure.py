"""What the service tells a stranger: no file-system paths, no echo of arbitrary headers, and the
security headers on every kind of answer."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from app import create_app
from tests.conftest import hide_environment, png_bytes

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def broken_app(base_app_config, monkeypatch, tmp_path):
    """An app whose models fail to load: one missing inside the project, one broken outside it."""
    hide_environment(monkeypatch)
    outside = tmp_path / "secret-folder" / "digits.onnx"
    outside.parent.mkdir()
    outside.write_bytes(b"not an onnx model")
    models = {
        "numbers": {"type": "numbers", "path": str(outside)},
        "ocr": {"type": "ocr", "path": "models/no-such-model.onnx"},
        "doodles": {"type": "doodle", "path": "models/doodles.onnx", "labels": "models/doodles_labels.txt"},
        "tracking": {
            "type": "tracking",
            "path": str(ROOT / "models" / "tracking.onnx"),
            "detector": str(ROOT / "models" / "face_detector.onnx"),
        },
    }
    app = create_app({**base_app_config, "MODELS": models})
    app.config["SECRET_FOLDER"] = str(outside.parent)
    return app


def absolute_paths(text: str, *folders: str) -> list[str]:
    """Return the folders (and the project root) that appear in an answer."""
    return [folder for folder in (str(ROOT), str(ROOT.resolve()), *folders) if folder in text]


def test_ready_shows_no_absolute_path(broken_app):
    response = broken_app.test_client().get("/ready")
    assert response.status_code == 503
    text = response.get_data(as_text=True)
    assert absolute_paths(text, broken_app.config["SECRET_FOLDER"], "/tmp") == [], text
    rows = {row["name"]: row for row in response.get_json()["models"]}
    assert rows["doodles"]["file"] == "models/doodles.onnx"
    assert rows["doodles"]["labels_file"] == "models/doodles_labels.txt"
    assert rows["tracking"]["file"] == "models/tracking.onnx"
    assert rows["tracking"]["detector_file"] == "models/face_detector.onnx"
    assert rows["ocr"]["file"] == "models/no-such-model.onnx"
    assert "models/no-such-model.onnx" in rows["ocr"]["error"]
    # Outside the project only the file name is shown.
    assert rows["numbers"]["file"] == "digits.onnx" and "digits.onnx" in rows["numbers"]["error"]


def test_default_ready_shows_project_relative_paths(client):
    body = client.get("/ready").get_json()
    text = json.dumps(body)
    assert absolute_paths(text) == [], text
    for row in body["models"]:
        for key, value in row.items():
            if key == "file" or key.endswith("_file") or key == "source":
                assert not value.startswith("/") and value.startswith("models/"), (key, value)


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("post", "/api/predict", {"data": b"\x89PNG", "content_type": "image/png"}),
        ("post", "/api/ocr", {"data": b"\x89PNG", "content_type": "image/png"}),
        ("get", "/api/classifier/models", {}),
    ],
)
def test_model_failures_answered_to_clients_show_no_path(broken_app, method, path, kwargs):
    response = broken_app.test_client().open(path, method=method.upper(), **kwargs)
    text = response.get_data(as_text=True)
    assert absolute_paths(text, broken_app.config["SECRET_FOLDER"], "/tmp") == [], text


def test_stored_images_show_no_path(base_app_config, monkeypatch, tmp_path):
    hide_environment(monkeypatch)
    image_dir = tmp_path / "kept-images"
    app = create_app({**base_app_config, "SAVE_IMAGES": True, "IMAGE_DIR": str(image_dir)})
    client = app.test_client()
    upload = {"file": (io.BytesIO(png_bytes(np.zeros((8, 8), np.uint8))), "x.png"), "model": "numbers"}
    created = client.post("/images", data=upload, content_type="multipart/form-data")
    assert created.status_code == 201
    image_id = created.get_json()["id"]
    for path in ("/images", f"/images/{image_id}", "/images/export?model=numbers"):
        # The export is a zip archive: its member names are checked too.
        text = client.get(path).get_data().decode("utf-8", "replace")
        assert absolute_paths(text, str(image_dir), str(tmp_path)) == [], (path, text[:500])
    app.extensions["store"].close()


@pytest.mark.parametrize(
    "given",
    ["<script>alert(1)</script>", "x" * 200, "a b", "line\tbreak", "ünïcode", "../../etc/passwd"],
)
def test_request_id_is_echoed_only_when_it_looks_like_one(client, given):
    response = client.get("/health", headers={"X-Request-ID": given})
    echoed = response.headers["X-Request-ID"]
    assert echoed != given and len(echoed) == 16 and echoed.isalnum()


@pytest.mark.parametrize("given", ["abc123", "rid-42", "0f1e2d3c4b5a69788796a5b4c3d2e1f0"])
def test_a_proxy_request_id_is_kept(client, given):
    assert client.get("/health", headers={"X-Request-ID": given}).headers["X-Request-ID"] == given


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/"),
        ("get", "/docs"),
        ("get", "/openapi.json"),
        ("get", "/static/vendor/swagger-ui/swagger-ui-bundle.js"),
        ("get", "/api/no-such-route"),
        ("get", "/no-such-page"),
        ("get", "/api/predict"),  # 405
        ("post", "/api/predict"),  # 400
        ("get", "/metrics"),
    ],
)
def test_every_kind_of_answer_carries_the_security_headers(client, method, path):
    headers = client.open(path, method=method.upper()).headers
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert "'unsafe-inline'" not in headers["Content-Security-Policy"]


def test_the_403_carries_the_security_headers(base_app_config, monkeypatch):
    hide_environment(monkeypatch)
    app = create_app({**base_app_config, "ALLOWED_IPS": ["10.0.0.0/8"]})
    response = app.test_client().get("/", environ_base={"REMOTE_ADDR": "192.0.2.1"})
    assert response.status_code == 403
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
