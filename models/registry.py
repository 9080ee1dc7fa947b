"""The model registry: every configured model, loaded and warmed once per process."""

from __future__ import annotations

import importlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.files import without_paths
from models.runtime import ServedModel

log = logging.getLogger(__name__)

# The model kinds this service knows, by config "type" -> "module:Class". Adding a model kind is
# one module plus one line here; a subclass of models.classifier.Classifier is served at
# /api/classifier/<name>. Strings keep unconfigured kinds (and their imports) out of a worker.
MODEL_TYPES: dict[str, str] = {
    "numbers": "models.numbers:NumbersModel",
    "doodle": "models.doodles:DoodleModel",
    "teachable": "models.teachable:TeachableModel",
    "ocr": "models.ocr:OcrModel",
    "tracking": "models.tracking:NoseModel",
}


class ModelNotLoaded(LookupError):
    """A model that is not configured, or failed to load; the HTTP layer answers 503."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"model {name!r} not loaded: {reason}")
        self.name = name
        self.reason = reason


@dataclass(frozen=True)
class Registry:
    """Loaded models by name. Built once at start-up and never mutated, so threads share it."""

    models: dict[str, ServedModel] = field(default_factory=dict)
    specs: dict[str, dict] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    # The class of every configured model whose type is known, loaded or not.
    classes: dict[str, type[ServedModel]] = field(default_factory=dict)
    load_seconds: float = 0.0

    def get(self, name: str) -> ServedModel:
        """Return a loaded model or raise ModelNotLoaded."""
        model = self.models.get(name)
        if model is not None:
            return model
        if name in self.failures:
            raise ModelNotLoaded(name, self.failures[name])
        raise ModelNotLoaded(name, "not configured")

    def by_class(self, base: type[ServedModel]) -> dict[str, dict]:
        """Return the specs (loaded or not) of the configured models served by a subclass of `base`."""
        return {
            n: s for n, s in self.specs.items() if n in self.classes and issubclass(self.classes[n], base)
        }

    @property
    def ready(self) -> bool:
        """True when every configured model is loaded and warmed."""
        return not self.failures and all(m.warm for m in self.models.values())

    def status(self) -> list[dict]:
        """Describe every configured model for /ready."""
        rows = []
        for name, spec in self.specs.items():
            if name in self.models:
                rows.append({**self.models[name].describe(), "loaded": True})
            else:
                rows.append(
                    {
                        "name": name,
                        "kind": spec.get("type"),
                        "file": spec.get("path"),
                        "loaded": False,
                        "error": self.failures.get(name, "not loaded"),
                    }
                )
        return rows


def model_class(type_name: str) -> type[ServedModel]:
    """Import the class that serves a model type."""
    try:
        target = MODEL_TYPES[type_name]
    except KeyError:
        raise ValueError(
            f"unknown model type {type_name!r}; known: {', '.join(sorted(MODEL_TYPES))}"
        ) from None
    module_name, _, class_name = target.partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def discover_classifiers(folder: Path) -> dict[str, dict]:
    """Find Teachable Machine exports (keras_model.h5 + labels.txt) in sub-folders of a folder."""
    found: dict[str, dict] = {}
    if not folder.is_dir():
        return found
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        h5 = sub / "keras_model.h5"
        if h5.is_file():
            found[sub.name] = {"type": "teachable", "path": str(h5), "labels": str(sub / "labels.txt")}
    return found


def resolve_path(root: Path, value: str | None) -> Path | None:
    """Resolve a configured path against the project root."""
    if value is None:
        return None
    path = Path(value)
    return path if path.is_absolute() else root / path


def build_registry(specs: dict[str, dict], *, root: Path, threads: int = 1) -> Registry:
    """Load and warm every configured model; a model that fails is recorded, not fatal."""
    start = time.perf_counter()
    models: dict[str, ServedModel] = {}
    failures: dict[str, str] = {}
    classes: dict[str, type[ServedModel]] = {}
    for name, spec in specs.items():
        options: dict[str, Any] = {k: v for k, v in spec.items() if k not in ("type", "path")}
        try:
            cls = classes[name] = model_class(spec["type"])
            # Files beside the model (a classifier's labels, the tracker's face detector).
            for key in cls.side_files:
                if key in options:
                    options[key] = resolve_path(root, options[key])
            model = cls(name, resolve_path(root, spec["path"]), threads=threads, **options)
            model.warmup()
        except Exception as exc:  # one bad model must not stop the others...
            if getattr(exc, "fatal", False):
                # ...but a configuration mistake (labels that do not fit their model) must stop
                # start-up, or the service would answer with the wrong names.
                log.critical("model %s: %s", name, exc)
                raise
            # The reason is shown to clients (/ready, 503 answers): no absolute paths in it.
            failures[name] = without_paths(f"{type(exc).__name__}: {exc}", root)
            log.error("model %s failed to load from %s: %s", name, spec.get("path"), exc)
            continue
        models[name] = model
        log.info(
            "model %s loaded from %s (version %s) in %.1f ms, warm-up %.2f ms",
            name,
            model.path,
            model.onnx.version,
            model.load_ms,
            getattr(model, "warmup_ms", 0.0),
        )
    return Registry(
        models=models,
        specs=dict(specs),
        failures=failures,
        classes=classes,
        load_seconds=time.perf_counter() - start,
    )


def init_app(app) -> Registry:
    """Build this process's registry from app config and keep it in app.extensions."""
    root = Path(app.root_path)
    specs = dict(app.config["MODELS"])
    for folder in app.config["CLASSIFIER_DIRS"]:
        for name, spec in discover_classifiers(resolve_path(root, folder)).items():
            specs.setdefault(name, spec)
    registry = build_registry(specs, root=root, threads=app.config["ONNX_THREADS"])
    app.extensions["registry"] = registry
    return registry


def get_registry() -> Registry:
    """Return the registry of the current app."""
    from flask import current_app

    return current_app.extensions["registry"]
