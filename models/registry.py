"""The model registry: every configured model, loaded and warmed once per process.

A registry is never mutated. When a model is added to or removed from a classifier folder (an
upload), the folder's generation file changes; each worker notices it before its next classifier
request (`refresh`), builds a new registry that keeps every unchanged model, and swaps it in.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from models.files import without_paths, write_atomic
from models.runtime import ModelFileError, ServedModel

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
# Rewritten in a classifier folder each time a model is added or removed there.
GENERATION_FILE = ".generation"
# The main file of each Teachable Machine export format, as models.converters looks for them.
EXPORT_FILES = ("keras_model.h5", "model.json", "model_unquant.tflite", "model.tflite")


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
    # Each model file's identity when it was loaded, so a rebuild keeps only what did not change.
    stamps: dict[str, tuple | None] = field(default_factory=dict)
    # The classifier folders' generation this registry was built from (see `refresh`).
    generation: tuple = ()

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
    """Find Teachable Machine exports (Keras .h5, TF.js, TFLite) in sub-folders of a folder."""
    from models.converters import find_export

    found: dict[str, dict] = {}
    if not folder.is_dir():
        return found
    # Dot-folders are unfinished uploads and removals.
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not any((sub / name).is_file() for name in EXPORT_FILES):
            continue
        try:
            fmt, main = find_export(sub)
        except ModelFileError:
            # Two exports in one folder: served as a load failure that says so, not skipped.
            found[sub.name] = {"type": "teachable", "path": str(sub)}
            continue
        labels = sub / ("metadata.json" if fmt == "tfjs" else "labels.txt")
        found[sub.name] = {"type": "teachable", "path": str(main), "labels": str(labels)}
    return found


def mark_changed(folder: Path) -> None:
    """Rewrite a classifier folder's generation file, so every worker reloads its classifiers."""
    token = f"{time.time_ns()} {os.getpid()} {uuid.uuid4().hex}\n"
    write_atomic(Path(folder) / GENERATION_FILE, lambda tmp: tmp.write_text(token, encoding="ascii"))


def file_stamp(path: Path | None) -> tuple | None:
    """Return a file's identity (inode, mtime, size), or None when it is missing."""
    try:
        st = os.stat(path)
    except (TypeError, OSError):
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def generation_files(folders: list[Path]) -> tuple[str, ...]:
    """Return the paths of the classifier folders' generation files."""
    return tuple(str(folder / GENERATION_FILE) for folder in folders)


def classifier_generation(files: tuple[str, ...]) -> tuple:
    """Return the generation of the classifier folders from their generation files: one stat each."""
    return tuple(file_stamp(path) for path in files)


def resolve_path(root: Path, value: str | None) -> Path | None:
    """Resolve a configured path against the project root."""
    if value is None:
        return None
    path = Path(value)
    return path if path.is_absolute() else root / path


def build_registry(specs: dict[str, dict], *, root: Path, threads: int = 1, strict: bool = True) -> Registry:
    """Load and warm every configured model; a model that fails is recorded, not fatal.

    With `strict` (at start-up), labels that do not fit their model stop the start.
    """
    start = time.perf_counter()
    models: dict[str, ServedModel] = {}
    failures: dict[str, str] = {}
    classes: dict[str, type[ServedModel]] = {}
    stamps: dict[str, tuple | None] = {}
    for name, spec in specs.items():
        stamps[name] = file_stamp(resolve_path(root, spec.get("path")))
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
            if strict and getattr(exc, "fatal", False):
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
        stamps=stamps,
    )


def classifier_folders(app) -> list[Path]:
    """Return the app's classifier folders (CLASSIFIER_DIRS), resolved against its root."""
    root = Path(app.root_path)
    return [resolve_path(root, folder) for folder in app.config["CLASSIFIER_DIRS"]]


def configured_specs(app) -> dict[str, dict]:
    """Return every model to serve: MODELS, then the exports in the classifier folders."""
    specs = dict(app.config["MODELS"])
    for folder in classifier_folders(app):
        for name, spec in discover_classifiers(folder).items():
            specs.setdefault(name, spec)
    return specs


def init_app(app) -> Registry:
    """Build this process's registry from app config and keep it in app.extensions."""
    # The folders are settings, fixed for the app's life: their paths are built once, not on every
    # classifier request (pathlib cost 10-35 us of the per-request check; a stat costs 2).
    files = generation_files(classifier_folders(app))
    app.extensions["generation_files"] = files
    # Read before the folders are: a change made while loading is seen by the next refresh.
    generation = classifier_generation(files)
    registry = build_registry(
        configured_specs(app), root=Path(app.root_path), threads=app.config["ONNX_THREADS"]
    )
    app.extensions["registry"] = replace(registry, generation=generation)
    app.extensions["registry_lock"] = threading.Lock()
    return app.extensions["registry"]


def rebuild(old: Registry, specs: dict[str, dict], *, root: Path, threads: int) -> Registry:
    """Return a registry of `specs` that keeps every model of `old` whose spec and file did not change."""
    kept = {
        name: old.models[name]
        for name, spec in specs.items()
        if name in old.models
        and old.specs.get(name) == spec
        and old.stamps.get(name) == file_stamp(resolve_path(root, spec.get("path")))
    }
    # Not strict: a bad model added while serving is reported by /ready; it cannot stop a start.
    loaded = build_registry(
        {n: s for n, s in specs.items() if n not in kept}, root=root, threads=threads, strict=False
    )
    models = {**kept, **loaded.models}
    return Registry(
        models={name: models[name] for name in specs if name in models},
        specs=dict(specs),
        failures=dict(loaded.failures),
        classes={**{n: old.classes[n] for n in kept}, **loaded.classes},
        load_seconds=loaded.load_seconds,
        stamps={**{n: old.stamps[n] for n in kept}, **loaded.stamps},
    )


def refresh(app) -> Registry:
    """Swap in a new registry when a classifier folder changed since this one was built."""
    files = app.extensions["generation_files"]
    registry = app.extensions["registry"]
    if classifier_generation(files) == registry.generation:
        return registry
    # One thread rebuilds; the others wait for it, so none serves a removed model once told so.
    with app.extensions["registry_lock"]:
        registry = app.extensions["registry"]
        generation = classifier_generation(files)
        if generation == registry.generation:
            return registry
        built = rebuild(
            registry, configured_specs(app), root=Path(app.root_path), threads=app.config["ONNX_THREADS"]
        )
        app.extensions["registry"] = replace(built, generation=generation)
        log.info(
            "classifier folders changed: %d models kept, %d loaded, %d failed",
            len(built.models) - len(set(built.models) - set(registry.models)),
            len(set(built.models) - set(registry.models)),
            len(built.failures),
        )
        return app.extensions["registry"]


def get_registry() -> Registry:
    """Return the registry of the current app."""
    from flask import current_app

    return current_app.extensions["registry"]
