"""The application factory."""

from __future__ import annotations

import logging
import sys
import threading

import cv2
import pytest

from app import create_app


def test_each_call_builds_a_fresh_app(base_app_config, fresh_registries):
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


def _on_a_fresh_thread(fn):
    """Run fn on a new thread, as a server's pool would, and return its result."""
    result = {}
    worker = threading.Thread(target=lambda: result.setdefault("value", fn()))
    worker.start()
    worker.join()
    return result["value"]


def test_opencv_runs_without_ipp_on_every_request_thread(base_app_config):
    # OpenCV keeps the IPP switch per thread: the app must set it on the server's threads too.
    if not _on_a_fresh_thread(cv2.ipp.useIPP):
        pytest.skip("this OpenCV build has no IPP")

    def ipp_while_serving(app):
        return lambda: (app.test_client().get("/health"), cv2.ipp.useIPP())[1]

    assert _on_a_fresh_thread(ipp_while_serving(create_app(base_app_config))) is False
    on = create_app({**base_app_config, "OPENCV_IPP": True})
    assert _on_a_fresh_thread(ipp_while_serving(on)) is True
