"""Teachable Machine image classifiers, in each export format, served from a cached ONNX file.

A classifier folder holds one export: keras_model.h5 + labels.txt (Keras), model.json +
weights.bin + metadata.json (TensorFlow.js), or model_unquant.tflite / model.tflite + labels.txt
(TensorFlow Lite, float / quantized). The ONNX cache (<main file>.onnx) sits beside the export's
main file with a stamp (<main file>.onnx.json) that records the SHA-256 of the export's files. A
fresh cache is served as is; a missing or stale one is rebuilt by models.converters, without
TensorFlow, under a per-file lock so that parallel workers convert once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from models.classifier import Classifier
from models.converters import (
    EXPORT_FORMATS,
    Converted,
    convert_keras_h5,
    convert_tfjs_export,
    convert_tflite_export,
    find_export,
)
from models.converters.labels import parse_labels
from models.converters.tfjs import read_json
from models.converters.tfjs import read_labels as read_metadata_labels
from models.files import file_sha256, write_atomic
from models.runtime import ModelFileError, ModelInputError

log = logging.getLogger(__name__)

# Bump when the converter changes what it writes, so old caches are rebuilt. Format 1 came from
# the Keras-based converter (training/teachable_convert.py, checked against Keras to 1e-9) and
# equals format 2 within 1e-5 (tests/models/test_converters.py), so its caches are still served.
CACHE_FORMAT = 2
SERVED_CACHE_FORMATS = (1, 2)
INPUT_SIZE = (224, 224)
# The main file of each format, and the export format of a cache without that metadata.
TFJS_MODEL = EXPORT_FORMATS["tfjs"]
CONVERTED_SUFFIXES = (".h5", ".tflite")


def cache_paths(source: Path) -> tuple[Path, Path]:
    """Return the ONNX cache and its stamp for an export's main file."""
    source = Path(source)
    return source.with_suffix(".onnx"), source.with_suffix(".onnx.json")


def is_export(source: Path) -> bool:
    """Tell whether a model file is an export to convert (not an ONNX file served as is)."""
    source = Path(source)
    return source.suffix.lower() in CONVERTED_SUFFIXES or source.name == TFJS_MODEL


def export_files(source: Path) -> list[Path]:
    """Return the files an export's model is read from: the main file, and TF.js's weights files."""
    source = Path(source)
    if source.name != TFJS_MODEL:
        return [source]
    try:
        manifest = read_json(source, TFJS_MODEL).get("weightsManifest") or []
        names = [name for group in manifest for name in group.get("paths", [])]
    except (ModelFileError, AttributeError, TypeError):
        return [source]  # the converter says what is wrong with it
    shards = {name for name in names if isinstance(name, str) and name and Path(name).name == name}
    return [source, *(source.with_name(name) for name in sorted(shards))]


def source_sha256(source: Path) -> str:
    """Return the SHA-256 of an export's model files (of the file itself when it is one)."""
    files = export_files(source)
    if len(files) == 1:
        return file_sha256(files[0])
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name} {file_sha256(path)}\n".encode())
    return digest.hexdigest()


def read_stamp(stamp: Path) -> dict:
    """Read a cache stamp, or {} when it is missing or unreadable."""
    try:
        data = json.loads(stamp.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def cache_is_fresh(source: Path) -> bool:
    """True when the ONNX cache exists and was built by a served format from these exact files."""
    source = Path(source)
    onnx_path, stamp_path = cache_paths(source)
    if not (source.is_file() and onnx_path.is_file()):
        return False
    stamp = read_stamp(stamp_path)
    try:
        return (
            stamp.get("format") in SERVED_CACHE_FORMATS
            and stamp.get("source_sha256") == source_sha256(source)
            and stamp.get("onnx_sha256") == file_sha256(onnx_path)
        )
    except OSError:  # a weights file is missing: the converter will say so
        return False


@contextlib.contextmanager
def lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock named after a path, so parallel workers take turns (convert once, install once)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: atomic renames still keep files whole
        yield
        return
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    lock_path = Path(tempfile.gettempdir()) / f"teachable-{key}.lock"
    with open(lock_path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_onnx(source: Path, labels: Path | None = None, *, force: bool = False) -> Path:
    """Return a fresh ONNX cache for an export's main file, converting only when needed."""
    source = Path(source)
    if not source.is_file():
        raise ModelFileError(f"model file not found: {source}")
    onnx_path, _ = cache_paths(source)
    if not force and cache_is_fresh(source):
        return onnx_path
    with lock(source):
        # Another worker may have converted it while this one waited for the lock.
        if not force and cache_is_fresh(source):
            return onnx_path
        return _convert_to_cache(source, labels)


def convert_source(source: Path, labels: Path | None = None) -> Converted:
    """Convert an export's main file (with its labels file, else the one beside it) to ONNX."""
    source = Path(source)
    if source.suffix.lower() == ".h5":
        return convert_keras_h5(source, labels)
    if source.name == TFJS_MODEL:
        metadata = labels if labels is not None and labels.suffix.lower() == ".json" else None
        return convert_tfjs_export(source, metadata)
    return convert_tflite_export(source, labels)


def _convert_to_cache(source: Path, labels: Path | None) -> Path:
    """Convert an export and write its ONNX cache, then its stamp, each atomically."""
    onnx_path, stamp_path = cache_paths(source)
    log.warning("ONNX cache %s is missing or stale; converting %s", onnx_path, source)
    try:
        source_sha = source_sha256(source)  # before converting: a file changed meanwhile reads stale
    except OSError:
        source_sha = None  # a weights file is missing: the converter says which
    start = time.perf_counter()
    converted = convert_source(source, labels)
    try:
        write_atomic(onnx_path, converted.save)
    except OSError as exc:
        raise ModelFileError(f"cannot write the ONNX cache {onnx_path}: {exc}") from None
    stamp = {
        "format": CACHE_FORMAT,
        "source": source.name,
        "source_format": converted.source_format,
        "source_sha256": source_sha,
        "onnx_sha256": file_sha256(onnx_path),
        "converted_s": round(time.perf_counter() - start, 2),
        "conversion": converted.facts,
    }
    write_atomic(stamp_path, lambda tmp: tmp.write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8"))
    log.info("converted %s to %s in %.2f s", source, onnx_path, stamp["converted_s"])
    return onnx_path


def read_export_labels(path: Path) -> list[str]:
    """Read the labels of an export: metadata.json (TF.js) or labels.txt (Keras, TFLite)."""
    path = Path(path)
    return read_metadata_labels(path) if path.suffix.lower() == ".json" else parse_labels(path)


def teachable_input(image: np.ndarray, size: tuple[int, int] = INPUT_SIZE) -> np.ndarray:
    """Fit an RGB uint8 image to size (Lanczos) and scale to [-1, 1], as Teachable Machine's snippet does."""
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    if array.ndim != 3 or array.shape[2] != 3 or array.size == 0:
        raise ModelInputError(f"expected an RGB image, got an array of shape {list(array.shape)}")
    if array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    fitted = ImageOps.fit(Image.fromarray(np.ascontiguousarray(array)), size, Image.Resampling.LANCZOS)
    return (np.asarray(fitted).astype(np.float32) / 127.5 - 1)[np.newaxis]


def source_format(source: Path) -> str:
    """Name the export format of a model file by its name (when its ONNX model does not say)."""
    for fmt, name in EXPORT_FORMATS.items():
        if source.name == name:
            return fmt
    return {".h5": "keras_h5", ".json": "tfjs", ".tflite": "tflite"}.get(source.suffix.lower(), "onnx")


class TeachableModel(Classifier):
    """A Teachable Machine image model: MobileNet features + a Dense head, softmax over labels.

    The path is an export's main file, an ONNX file, or a folder holding one export.
    """

    kind = "teachable"
    input_mode = "rgb"
    made_for = "photos"
    labels_file = "labels.txt"
    decimals = None  # unrounded, as this route has always answered

    def __init__(
        self, name: str, path: Path, *, threads: int = 1, labels: Path | None = None, **options: Any
    ):
        path = Path(path)
        if path.is_dir():
            _, path = find_export(path)
        if labels is None and path.name == TFJS_MODEL:
            labels = path.with_name("metadata.json")  # a TF.js export keeps its labels there
        super().__init__(name, path, threads=threads, labels=labels, **options)
        meta = self.onnx.session.get_modelmeta().custom_metadata_map
        self.source_format = meta.get("source_format") or source_format(self.source)
        shape = self.onnx.input_shape
        self.input_size = (shape[2], shape[1]) if len(shape) == 4 else INPUT_SIZE

    @staticmethod
    def read_labels(path: Path) -> list[str]:
        """Read a Teachable Machine labels.txt, or a TF.js export's metadata.json."""
        return read_export_labels(path)

    def onnx_path(self, source: Path) -> Path:
        """Return the ONNX cache of an export (converted when missing or stale), else the file."""
        return ensure_onnx(source, self.labels_path) if is_export(source) else source

    def preprocess(self, pixels: np.ndarray, **options: Any) -> tuple[np.ndarray, None]:
        """Fit an RGB uint8 image to the model's input (224x224) and scale it to [-1, 1]."""
        return teachable_input(pixels, self.input_size), None

    def describe(self) -> dict:
        """Describe the model, its source file, format and labels."""
        return {
            **super().describe(),
            "source": str(self.source),
            "format": self.source_format,
            "labels": list(self.labels),
            "input_mode": self.input_mode,
        }
