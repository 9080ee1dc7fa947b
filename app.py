"""The application factory: config -> logging -> registry -> store -> hooks -> blueprints -> errors.

Run it with `flask --app app run` or `gunicorn -c gunicorn.conf.py "app:create_app()"`.
"""

from __future__ import annotations

import logging
import logging.config
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from flask import Flask, g

import store
from blueprints import classifier, errors, gallery, instrumentation, limits, numbers, ocr, system, tracking
from config import ConfigError, load_config
from models import registry
from models.runtime import limit_heap_retention, set_opencv_ipp, single_threaded_opencv

__all__ = ["ConfigError", "create_app"]


class VisionApp(Flask):
    """Flask, asking once per function rather than per request whether a hook or view is async."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sync_callables: dict[Callable[..., Any], Callable[..., Any]] = {}

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """Return the callable Flask runs for `func`, worked out on first use and then remembered.

        Flask checks every before/after-request hook and the view with inspect on every request
        (8 checks for a model route here); the answer never changes for a function.
        """
        made = self._sync_callables.get(func)
        if made is None:
            made = self._sync_callables[func] = super().ensure_sync(func)
        return made


class RequestIdFilter(logging.Filter):
    """Add the current request id (or '-') to every log record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            try:
                record.request_id = g.get("request_id", "-")
            except RuntimeError:  # outside a request
                record.request_id = "-"
        return True


def configure_logging(config: Mapping[str, Any]) -> None:
    """Log to the console, and to a rotating file when LOG_FILE is set."""
    handlers: dict[str, dict] = {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["request_id"]},
    }
    if config["LOG_FILE"]:
        Path(config["LOG_FILE"]).parent.mkdir(parents=True, exist_ok=True)
        handlers["file"] = {
            "class": "logging.handlers.RotatingFileHandler",
            "filename": config["LOG_FILE"],
            "maxBytes": config["LOG_FILE_MAX_BYTES"],
            "backupCount": config["LOG_FILE_BACKUPS"],
            "encoding": "utf-8",
            "formatter": "plain",
            "filters": ["request_id"],
        }
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "filters": {"request_id": {"()": RequestIdFilter}},
            "formatters": {
                "plain": {
                    "format": "%(asctime)s %(levelname)s [%(process)d] %(name)s rid=%(request_id)s: %(message)s"
                }
            },
            "handlers": handlers,
            "root": {"level": config["LOG_LEVEL"], "handlers": list(handlers)},
        }
    )


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app; `config` overrides every other source (tests use it)."""
    settings = load_config(config)
    app = VisionApp(__name__, instance_relative_config=True)
    app.config.update(settings)
    app.json.sort_keys = False
    configure_logging(app.config)
    limit_heap_retention()
    single_threaded_opencv()
    # OpenCV keeps the IPP switch per thread: set it on whichever server thread takes the request.
    use_ipp = app.config["OPENCV_IPP"]
    app.before_request(lambda: set_opencv_ipp(use_ipp))

    registry.init_app(app)
    store.init_app(app)

    instrumentation.init_app(app)
    limits.init_app(app)  # URL, body and JSON limits, before any route reads the request
    system.init_app(app)
    for module in (system, numbers, classifier, ocr, tracking, gallery):
        app.register_blueprint(module.bp)
    errors.init_app(app)
    logging.getLogger(__name__).info(
        "app ready in pid %d: %d models loaded, %d failed",
        os.getpid(),
        len(app.extensions["registry"].models),
        len(app.extensions["registry"].failures),
    )
    return app
