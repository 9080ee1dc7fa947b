"""System endpoints: CPU and memory, liveness, readiness, metrics, the API description, the models page."""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import psutil
from flask import Blueprint, abort, current_app, jsonify, render_template, send_file
from pydantic import BaseModel

from blueprints.instrumentation import metrics_response
from blueprints.openapi import get_spec
from models.files import without_paths
from models.registry import get_registry, refresh, resolve_path

bp = Blueprint("system", __name__)


class SystemInfo(BaseModel):
    """CPU and memory use, in the original app's string format plus numbers."""

    memory: str
    cpu: str
    memory_percent: float
    cpu_percent: float
    memory_total_bytes: int
    memory_available_bytes: int
    process_rss_bytes: int
    pid: int


class Health(BaseModel):
    """The process answers."""

    status: Literal["ok"]


class ModelStatus(BaseModel):
    """One configured model as seen by this worker."""

    name: str
    kind: str | None = None
    file: str | None = None
    version: str | None = None
    load_ms: float | None = None
    loaded: bool
    warm: bool | None = None
    error: str | None = None


class Readiness(BaseModel):
    """Whether every configured model is loaded and warm."""

    ready: bool
    pid: int
    models: list[ModelStatus]


SCHEMAS = (SystemInfo, Health, Readiness)

SAMPLE_SECONDS = 0.5  # machine readings at most this often; the CPU figure spans at least this long


class SystemSampler:
    """The machine's CPU and memory and this process's RSS, read at most every `period` seconds.

    psutil's CPU figure is the use since its previous reading. Read on every request, at a few
    thousand requests a second it spanned a fraction of a millisecond and swung between 0 and
    100%; and reading /proc for every request cost more than the rest of the route. The requests
    in between share the last reading.
    """

    def __init__(self, period: float = SAMPLE_SECONDS, clock: Callable[[], float] = time.monotonic):
        self.period = period
        self.clock = clock
        self._lock = threading.Lock()
        self._read_at = -math.inf
        self._reading: dict[str, Any] | None = None
        self._process = psutil.Process()  # made in the worker (create_app runs after the fork)
        psutil.cpu_percent(interval=None)  # primed: the first reading then spans the start-up

    def read(self) -> dict[str, Any]:
        """Return the last reading, taking a new one when it is `period` seconds old."""
        reading = self._reading
        if reading is not None and self.clock() - self._read_at < self.period:
            return reading
        with self._lock:
            if self._reading is None or self.clock() - self._read_at >= self.period:
                self._reading = self._take()
                self._read_at = self.clock()
            return self._reading

    def _take(self) -> dict[str, Any]:
        memory = psutil.virtual_memory()
        cpu = psutil.cpu_percent(interval=None)  # since the previous reading
        return SystemInfo(
            memory=f"{memory.percent:.0f}%",
            cpu=f"{cpu:.0f}%",
            memory_percent=memory.percent,
            cpu_percent=cpu,
            memory_total_bytes=memory.total,
            memory_available_bytes=memory.available,
            process_rss_bytes=self._process.memory_info().rss,
            pid=os.getpid(),
        ).model_dump()


@bp.get("/api/system_info")
def system_info():
    """Report CPU and memory use of the machine and this worker.
    ---
    get:
      summary: CPU and memory use
      description: Read at most every 0.5 s per worker; "cpu" is the machine's use since the
        worker's previous reading (at least 0.5 s before, or since it started).
      responses:
        200:
          description: '"memory" and "cpu" keep the original string format, e.g. "65%".'
          content:
            application/json:
              schema: {$ref: '#/components/schemas/SystemInfo'}
    """
    return jsonify(current_app.extensions["system_sampler"].read())


@bp.get("/health")
def health():
    """Say the process is alive.
    ---
    get:
      summary: Liveness
      responses:
        200:
          description: The process answers.
          content:
            application/json:
              schema: {$ref: '#/components/schemas/Health'}
    """
    return jsonify({"status": "ok"})


@bp.get("/ready")
def ready():
    """Say whether every configured model is loaded and warmed.
    ---
    get:
      summary: Readiness
      responses:
        200:
          description: Every model is loaded and warm.
          content:
            application/json:
              schema: {$ref: '#/components/schemas/Readiness'}
        503:
          description: A model is not loaded; its error is listed.
          content:
            application/json:
              schema: {$ref: '#/components/schemas/Readiness'}
    """
    # A classifier added or removed through another worker counts here too, not only on /api/classifier.
    registry = refresh(current_app)
    root = Path(current_app.root_path)
    # Where the service is installed is nobody's business: paths are shown relative to the project
    # (models/numbers.onnx), or by file name when they lie outside it.
    models = [shown(row, root) for row in registry.status()]
    body = {"ready": registry.ready, "pid": os.getpid(), "models": models}
    return jsonify(body), (200 if registry.ready else 503)


def shown(value: Any, root: Path) -> Any:
    """Return a /ready value with every absolute path in its text replaced by its shown form."""
    if isinstance(value, str):
        return without_paths(value, root)
    if isinstance(value, dict):
        return {key: shown(item, root) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [shown(item, root) for item in value]
    return value


@bp.get("/metrics")
def metrics():
    """Expose Prometheus metrics, aggregated across gunicorn workers."""
    return metrics_response()


@bp.get("/openapi.json")
def openapi():
    """Serve the OpenAPI 3 description of the JSON API."""
    return jsonify(get_spec(current_app))


@bp.get("/docs")
def docs():
    """Serve the interactive API documentation (Swagger UI, served from static/)."""
    return render_template("docs.html")


# The digit model answers the ten digits: it has no labels file to read them from.
FIXED_LABELS = {"numbers": [str(d) for d in range(10)]}
SHOWN_LABELS = 10  # the models page shows the first few; the card has the rest


def model_cards(name: str) -> dict[str, Path]:
    """Return a configured model's cards by file name: the Markdown beside its model and side files."""
    registry = get_registry()
    spec = registry.specs.get(name, {})
    cls = registry.classes.get(name)
    root = Path(current_app.root_path)
    cards = {}
    for key in ("path", *(cls.side_files if cls else ())):
        path = resolve_path(root, spec.get(key))
        if path is None:
            continue
        # An int8 file (training/quantize.py) is described by its float model's card.
        card = path.with_name(path.stem.removesuffix(".int8") + ".md")
        if card.is_file():
            cards[card.name] = card
    return cards


def model_labels(name: str) -> list[str]:
    """Return what a loaded model answers: its labels, its OCR charset, or its fixed classes."""
    model = get_registry().models.get(name)
    if model is None:
        return []
    labels = getattr(model, "labels", None) or list(getattr(model, "charset", ""))
    return [str(label) for label in labels] or FIXED_LABELS.get(model.kind, [])


@bp.get("/models")
def models_page():
    """Show every configured model: kind, version, labels, load time and card."""
    registry = refresh(current_app)
    root = Path(current_app.root_path)
    models = [
        {**shown(row, root), "labels": model_labels(row["name"]), "cards": list(model_cards(row["name"]))}
        for row in registry.status()
    ]
    return render_template(
        "models.html", models=models, shown_labels=SHOWN_LABELS, load_seconds=registry.load_seconds
    )


@bp.get("/models/<name>/<card>")
def model_card(name: str, card: str):
    """Serve a model's card, its Markdown as plain text (only cards of configured models)."""
    path = model_cards(name).get(card)
    if path is None:
        abort(404)
    return send_file(path, mimetype="text/plain")


def init_app(app) -> None:
    """Give the app its system sampler (which primes the CPU counter for the first reading)."""
    app.extensions["system_sampler"] = SystemSampler()
