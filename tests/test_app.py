"""The application factory."""

from __future__ import annotations

import logging
import sys

from app import create_app


def test_each_call_builds_a_fresh_app(base_app_config):
    a, b = create_app(base_app_config), create_app(base_app_config)
    assert a is not b and a.extensions["registry"] is not b.extensions["registry"]


def test_every_blueprint_is_registered(app):
    assert {"system", "numbers", "classifier", "ocr", "tracking", "gallery"} <= set(app.blueprints)


def test_serving_does_not_import_tensorflow(app):
    assert "tensorflow" not in sys.modules or "keras" in sys.modules  # see the subprocess test


def test_importing_and_building_the_app_never_imports_tensorflow():
    import subprocess

    code = (
        "import sys; from app import create_app; create_app({'SAVE_IMAGES': False}); "
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'TensorFlow imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_log_file_rotates_and_records_requests(base_app_config, tmp_path):
    log_file = tmp_path / "logs" / "vision.log"
    app = create_app({**base_app_config, "LOG_FILE": str(log_file), "LOG_LEVEL": "INFO"})
    app.test_client().get("/health", headers={"X-Request-ID": "rid-42"})
    for handler in logging.getLogger().handlers:
        handler.flush()
    text = log_file.read_text()
    assert "GET /health 200" in text and "rid-42" in text and "ms" in text
