"""System endpoints: CPU and memory, liveness, readiness, metrics, the API description, the models page."""

from __future__ import annotations

import os
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

_process = psutil.Process(os.getpid())


@bp.get("/api/system_info")
def system_info():
    """Report CPU and memory use of the machine and this worker.
    ---
    get:
      summary: CPU and memory use
      responses:
        200:
          description: '"memory" and "cpu" keep the original string format, e.g. "65%".'
          content:
            application/json:
              schema: {$ref: '#/components/schemas/SystemInfo'}
    """
    memory = psutil.virtual_memory()
    # Non-blocking: the percentage since the previous call (primed at start-up).
    cpu = psutil.cpu_percent(interval=None)
    info = SystemInfo(
        memory=f"{memory.percent:.0f}%",
        cpu=f"{cpu:.0f}%",
        memory_percent=memory.percent,
        cpu_percent=cpu,
        memory_total_bytes=memory.total,
        memory_available_bytes=memory.available,
        process_rss_bytes=_process.memory_info().rss,
        pid=os.getpid(),
    )
    return jsonify(info.model_dump())


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
        if path is not None and path.with_suffix(".md").is_file():
            cards[path.with_suffix(".md").name] = path.with_suffix(".md")
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
    """Prime the CPU counter so the first /api/system_info reading is meaningful."""
    psutil.cpu_percent(interval=None)
