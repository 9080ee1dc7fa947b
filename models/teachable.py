"""Teachable Machine image classifiers: keras_model.h5 + labels.txt, served from a cached ONNX file.

The ONNX cache (keras_model.onnx) sits beside the .h5 with a stamp (keras_model.onnx.json) that
records the .h5's SHA-256. A fresh cache is served as is, without TensorFlow; a missing or stale
one is rebuilt by training.teachable_convert, which imports TensorFlow only then.
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
from models.files import file_sha256, write_atomic
from models.runtime import ModelFileError, ModelInputError

log = logging.getLogger(__name__)

# Bump when the converter changes what it writes, so old caches are rebuilt.
CACHE_FORMAT = 1
INPUT_SIZE = (224, 224)


def cache_paths(h5: Path) -> tuple[Path, Path]:
    """Return the ONNX cache and its stamp for a .h5 file."""
    h5 = Path(h5)
    return h5.with_suffix(".onnx"), h5.with_suffix(".onnx.json")


def read_stamp(stamp: Path) -> dict:
    """Read a cache stamp, or {} when it is missing or unreadable."""
    try:
        data = json.loads(stamp.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def cache_is_fresh(h5: Path) -> bool:
    """True when the ONNX cache exists and was built by this format from this exact .h5."""
    h5 = Path(h5)
    onnx_path, stamp_path = cache_paths(h5)
    if not (h5.is_file() and onnx_path.is_file()):
        return False
    stamp = read_stamp(stamp_path)
    return (
        stamp.get("format") == CACHE_FORMAT
        and stamp.get("source_sha256") == file_sha256(h5)
        and stamp.get("onnx_sha256") == file_sha256(onnx_path)
    )


@contextlib.contextmanager
def _conversion_lock(h5: Path) -> Iterator[None]:
    """Hold an exclusive per-file lock, so parallel workers convert one .h5 once, not all at once."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: atomic renames still keep the cache whole
        yield
        return
    key = hashlib.sha256(str(h5.resolve()).encode()).hexdigest()[:16]
    lock_path = Path(tempfile.gettempdir()) / f"teachable-{key}.lock"
    with open(lock_path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_onnx(h5: Path, *, force: bool = False) -> Path:
    """Return a fresh ONNX cache for a .h5, converting (with TensorFlow) only when needed."""
    h5 = Path(h5)
    if not h5.is_file():
        raise ModelFileError(f"model file not found: {h5}")
    onnx_path, _ = cache_paths(h5)
    if not force and cache_is_fresh(h5):
        return onnx_path
    with _conversion_lock(h5):
        # Another worker may have converted it while this one waited for the lock.
        if not force and cache_is_fresh(h5):
            return onnx_path
        return _convert_to_cache(h5)


def _convert_to_cache(h5: Path) -> Path:
    """Convert a .h5 and write its ONNX cache, then its stamp, each atomically."""
    onnx_path, stamp_path = cache_paths(h5)
    log.warning("ONNX cache %s is missing or stale; converting %s", onnx_path, h5)
    try:
        from training.teachable_convert import convert
    except ImportError as exc:
        raise ModelFileError(
            f"the ONNX cache {onnx_path} is missing or stale and {h5} cannot be converted here ({exc}); "
            f"run `python -m training.teachable_convert {h5}` where the training extras are installed"
        ) from None
    source_sha = file_sha256(h5)
    start = time.perf_counter()
    report: dict = {}

    def write_onnx(tmp: Path) -> None:
        report.update(convert(h5, tmp, source_sha256=source_sha))

    try:
        write_atomic(onnx_path, write_onnx)
    except ModelFileError:
        raise
    except ImportError as exc:
        raise ModelFileError(
            f"the ONNX cache {onnx_path} is missing or stale and converting {h5} needs TensorFlow ({exc}); "
            "install the training extras (pip install '.[train]') or commit a fresh cache"
        ) from None
    except OSError as exc:
        raise ModelFileError(f"cannot write the ONNX cache {onnx_path}: {exc}") from None
    stamp = {
        "format": CACHE_FORMAT,
        "source": h5.name,
        "source_sha256": source_sha,
        "onnx_sha256": file_sha256(onnx_path),
        "converted_s": round(time.perf_counter() - start, 1),
        "conversion": {k: v for k, v in report.items() if k not in ("source", "onnx")},
    }
    write_atomic(stamp_path, lambda tmp: tmp.write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8"))
    log.info("converted %s to %s in %.1f s", h5, onnx_path, stamp["converted_s"])
    return onnx_path


def parse_labels(path: Path) -> list[str]:
    """Read a Teachable Machine labels.txt ("0 Name" per line, UTF-8, BOM and blank lines tolerated)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ModelFileError(f"labels file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"cannot read labels file {path} as UTF-8: {exc}") from None
    rows = [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not rows:
        raise ModelFileError(f"labels file {path} has no labels")
    indexed = [line.split(maxsplit=1) for _, line in rows]
    numbered = [parts[0].isascii() and parts[0].isdigit() for parts in indexed]
    if not all(numbered):
        if any(n and len(parts) > 1 for n, parts in zip(numbered, indexed, strict=True)):
            bad = next(n for (n, _), ok in zip(rows, numbered, strict=True) if not ok)
            raise ModelFileError(
                f"labels file {path} line {bad}: expected '<index> <name>' like the other lines"
            )
        return [line for _, line in rows]  # a plain list of names, one a line
    labels: dict[int, str] = {}
    for (number, _), parts in zip(rows, indexed, strict=True):
        if len(parts) < 2:
            raise ModelFileError(f"labels file {path} line {number}: index {parts[0]} has no name")
        index = int(parts[0])
        if index in labels:
            raise ModelFileError(f"labels file {path} line {number}: index {index} appears twice")
        labels[index] = parts[1].strip()
    if sorted(labels) != list(range(len(labels))):
        raise ModelFileError(
            f"labels file {path}: indexes must run from 0 to {len(labels) - 1}, got {sorted(labels)}"
        )
    return [labels[i] for i in range(len(labels))]


def teachable_input(image: np.ndarray) -> np.ndarray:
    """Fit an RGB uint8 image to 224x224 (Lanczos) and scale to [-1, 1], as Teachable Machine's snippet does."""
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    if array.ndim != 3 or array.shape[2] != 3 or array.size == 0:
        raise ModelInputError(f"expected an RGB image, got an array of shape {list(array.shape)}")
    if array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    fitted = ImageOps.fit(Image.fromarray(np.ascontiguousarray(array)), INPUT_SIZE, Image.Resampling.LANCZOS)
    return (np.asarray(fitted).astype(np.float32) / 127.5 - 1)[np.newaxis]


class TeachableModel(Classifier):
    """A Teachable Machine image model: MobileNetV2 features + a Dense head, softmax over labels."""

    kind = "teachable"
    input_mode = "rgb"
    made_for = "photos"
    labels_file = "labels.txt"
    decimals = None  # unrounded, as this route has always answered

    @staticmethod
    def read_labels(path: Path) -> list[str]:
        """Read a Teachable Machine labels.txt."""
        return parse_labels(path)

    def onnx_path(self, source: Path) -> Path:
        """Return the ONNX cache of a .h5 export (converted when missing or stale), else the file."""
        return ensure_onnx(source) if source.suffix.lower() == ".h5" else source

    def preprocess(self, pixels: np.ndarray, **options: Any) -> tuple[np.ndarray, None]:
        """Fit an RGB uint8 image to 224x224 and scale it to [-1, 1]."""
        return teachable_input(pixels), None

    def describe(self) -> dict:
        """Describe the model, its source file and labels."""
        return {
            **super().describe(),
            "source": str(self.source),
            "labels": list(self.labels),
            "input_mode": self.input_mode,
        }
