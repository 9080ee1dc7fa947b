"""ONNX Runtime sessions shared by every served model: load once, warm up, time each call."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import cv2
import numpy as np
import onnxruntime as ort
from prometheus_client import Histogram

from models.files import file_sha256

if TYPE_CHECKING:
    from models.image import InputImage

# How a model takes its pixels (see InputImage.pixels_as): 8-bit gray, or colour in RGB or BGR.
InputMode = Literal["gray", "rgb", "bgr"]

INFERENCE_SECONDS = Histogram(
    "model_inference_seconds",
    "Time spent in one model inference (ONNX Runtime run), by model.",
    ["model"],
    buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
)


class ModelInputError(ValueError):
    """An input a model cannot use; the HTTP layer answers it with a 4xx JSON error."""

    def __init__(self, message: str, code: str = "bad_image", status: int = 400, **extra: Any):
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.extra = extra


class ModelFileError(RuntimeError):
    """A model file that cannot be served (missing or corrupt); the other models still load."""

    fatal = False


class LabelMismatchError(ModelFileError):
    """A labels file whose count differs from the model's outputs: the app refuses to start."""

    fatal = True


# glibc mallopt parameters (malloc.h).
_M_MMAP_THRESHOLD = -3
# Blocks from this size up (a 1000x260 float32 image) get their own mapping, returned to the OS
# when freed. 128 KB kept RSS lowest but made OCR's many large temporaries page-fault (about 20 %
# more CPU per request); 4 MB let a worker grow past 250 MB again (docs/PERFORMANCE.md).
MMAP_THRESHOLD = 1024 * 1024


def single_threaded_opencv() -> None:
    """Run OpenCV calls on the calling thread, as ONNX Runtime sessions here do.

    gunicorn's workers x threads already keep every core busy under load; OpenCV's own thread
    pool then only adds hand-offs: about 4 % more CPU per /api/predict request, in-process.
    """
    cv2.setNumThreads(1)


def set_opencv_ipp(enabled: bool) -> None:
    """Let OpenCV use Intel IPP on the calling thread, or not.

    OpenCV keeps this switch per thread, so a server sets it in every request (it costs a fraction
    of a microsecond). IPP checks the CPU with a CPUID instruction on every call it serves, and on
    a virtual machine CPUID traps to the hypervisor: 8 us a call here, where the whole cv2 call
    otherwise takes 0.3-5 us on the small images these models see. With it off, /api/predict
    costs 10-13% less CPU and its outputs are the same to the bit (`python -m bench.digits`).
    """
    cv2.ipp.setUseIPP(enabled)


def limit_heap_retention() -> bool:
    """Make glibc give large freed blocks back to the OS; return whether it could be set.

    By default glibc raises its mmap threshold each time a large block is freed (up to 32 MB),
    after which image-sized arrays come from the heap and, fragmented across the threads of a
    gthread worker, are kept: a worker grew from 180 to 270 MB RSS under the benchmark's OCR
    load, and stayed under 190 MB with a fixed threshold (which also stops the raising).
    Elsewhere than glibc (macOS, Windows under waitress) this does nothing.
    """
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    ok = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    if not ok:
        logging.getLogger(__name__).warning("mallopt(M_MMAP_THRESHOLD) was refused; RSS may grow under load")
    return ok


class OnnxSession:
    """One ONNX Runtime session; `run` is thread-safe, so no lock is needed around it."""

    def __init__(self, path: Path, *, name: str, intra_op_threads: int = 1):
        path = Path(path)
        if not path.is_file():
            raise ModelFileError(f"model file not found: {path}")
        options = ort.SessionOptions()
        # Few threads per session: gunicorn runs workers x threads <= cores, and more
        # intra-op threads per call only add contention for the small models served here.
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # No per-session memory arena: it grows to the largest input seen (OCR batches of glyphs,
        # large frames for the face detector) and never shrinks; with it a worker sat ~35 MB
        # higher at ready and ~60 MB higher after the benchmark, for no measurable speed gain.
        options.enable_cpu_mem_arena = False
        try:
            self.session = ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ModelFileError(f"cannot load ONNX model {path}: {exc}") from exc
        self.name = name
        self.path = path
        inputs = self.session.get_inputs()
        self.input_name = inputs[0].name
        self.input_shape = tuple(d if isinstance(d, int) else 1 for d in inputs[0].shape)
        self.sha256 = file_sha256(path)
        meta = self.session.get_modelmeta()
        self.version = meta.custom_metadata_map.get("version") or self.sha256[:12]

    def run(self, x: np.ndarray) -> np.ndarray:
        """Run the model on one batch and return its first output."""
        start = time.perf_counter()
        out = self.session.run(None, {self.input_name: x})[0]
        INFERENCE_SECONDS.labels(self.name).observe(time.perf_counter() - start)
        return out

    def run_all(self, x: np.ndarray) -> list[np.ndarray]:
        """Run the model on one batch and return every output."""
        start = time.perf_counter()
        out = self.session.run(None, {self.input_name: x})
        INFERENCE_SECONDS.labels(self.name).observe(time.perf_counter() - start)
        return out


class ServedModel:
    """Base of every served model: one ONNX file, preprocess -> predict -> postprocess.

    A subclass sets `kind` and `input_mode`, implements `preprocess` and `postprocess`, and may
    override `predict` (an empty batch, averaged views) and `warmup_input`. `model(image, **options)`
    runs the three steps on a decoded image (its pixels taken in `input_mode`) or on an array,
    taken as it is; every step gets the request's options and keeps what it needs.
    """

    kind: ClassVar[str] = "model"
    input_mode: ClassVar[InputMode]
    # Options that name files beside the model (a labels file, a detector); the registry
    # resolves them against the project root as it does the model's own path.
    side_files: ClassVar[tuple[str, ...]] = ()

    def __init__(self, name: str, path: Path, *, threads: int = 1, **options: Any):
        start = time.perf_counter()
        self.name = name
        self.path = Path(path)
        self.options = options
        self.onnx = OnnxSession(self.path, name=name, intra_op_threads=threads)
        self.load_ms = round((time.perf_counter() - start) * 1000, 1)
        self.warm = False

    def pixels(self, image: InputImage | np.ndarray) -> np.ndarray:
        """Return a decoded image's pixels in this model's input mode; an array is taken as it is."""
        if isinstance(image, np.ndarray):
            return image
        return image.pixels_as(self.input_mode)

    def preprocess(self, pixels: np.ndarray, **options: Any) -> tuple[np.ndarray, Any]:
        """Turn pixels into the model's input tensor, and what postprocess needs of this request."""
        raise NotImplementedError

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Run the model on a prepared tensor."""
        return self.onnx.run(x)

    def postprocess(self, y: np.ndarray, context: Any, **options: Any) -> dict:
        """Turn raw model output (and preprocess's context) into a JSON-ready dict."""
        raise NotImplementedError

    def __call__(self, image: InputImage | np.ndarray, **options: Any) -> dict:
        """Answer one image: preprocess, predict, postprocess."""
        x, context = self.preprocess(self.pixels(image), **options)
        return self.postprocess(self.predict(x), context, **options)

    def warmup_input(self) -> np.ndarray:
        """Return a tensor for the warm-up inference."""
        return np.zeros(self.onnx.input_shape, dtype=np.float32)

    def warmup(self) -> None:
        """Run one inference so the first request does not pay for lazy initialisation."""
        start = time.perf_counter()
        self.predict(self.warmup_input())
        self.warmup_ms = round((time.perf_counter() - start) * 1000, 2)
        self.warm = True

    def describe(self) -> dict:
        """Describe the loaded model for /ready and model listings."""
        return {
            "name": self.name,
            "kind": self.kind,
            "file": str(self.path),
            "version": self.onnx.version,
            "sha256": self.onnx.sha256,
            "load_ms": self.load_ms,
            "warm": self.warm,
        }
