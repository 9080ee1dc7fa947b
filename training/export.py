"""Keras to ONNX for every training script: export, metadata (the serving contract), agreement check.

The ONNX file's metadata is how training talks to serving (a charset, labels, a crop
calibration, a version), so it is written here in one way: strings as they are, anything
else as JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def set_metadata(proto: Any, metadata: dict[str, Any], *, keep: bool = True) -> None:
    """Set metadata entries on an ONNX ModelProto; the other entries stay unless `keep` is false."""
    entries = {p.key: p.value for p in proto.metadata_props} if keep else {}
    entries.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()})
    del proto.metadata_props[:]
    for key, value in entries.items():
        proto.metadata_props.add(key=key, value=value)


def stamp_metadata(path: Path, metadata: dict[str, Any]) -> None:
    """Set metadata entries of an ONNX file in place; the graph and weights are written back unchanged."""
    import onnx

    proto = onnx.load(str(path))
    set_metadata(proto, metadata)
    onnx.save(proto, str(path))


def onnx_metadata(path: Path) -> dict[str, str]:
    """Return an ONNX file's metadata properties."""
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def export_onnx(model: Any, path: Path, metadata: dict[str, Any] | None = None) -> None:
    """Export a Keras model to ONNX and store `metadata` as the file's only metadata."""
    import onnx

    # The exporter traces the model, which needs it built: one call on zeros builds it.
    model(np.zeros((1, *model.input_shape[1:]), np.float32), training=False)
    model.export(str(path), format="onnx", verbose=False)
    proto = onnx.load(str(path))
    set_metadata(proto, metadata or {}, keep=False)
    onnx.save(proto, str(path))


def onnx_predict(path: Path, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """Run an ONNX file's first output on float inputs, in batches."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate(
        [session.run(None, {name: x[i : i + batch].astype(np.float32)})[0] for i in range(0, len(x), batch)]
    )


def keras_predict(model: Any, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """Run a Keras model in inference mode, in batches (model.predict costs more per call)."""
    return np.concatenate(
        [
            np.asarray(model(x[i : i + batch].astype(np.float32), training=False))
            for i in range(0, len(x), batch)
        ]
    )


def max_difference(model: Any, path: Path, sample: np.ndarray) -> float:
    """Return the largest |ONNX - Keras| over a sample: how far the export is from the trained model."""
    return float(np.abs(onnx_predict(path, sample) - keras_predict(model, sample)).max())


def interleaved_ms(paths: list[Path], inputs: list[np.ndarray], calls: int) -> list[float]:
    """Return each ONNX file's median ms a call, the files called in alternating order (A B B A ...).

    One ONNX Runtime thread, as served; interleaving makes load from other jobs fall on every file
    alike. `inputs` are whole tensors (batch included), taken in turn.
    """
    import time

    from models.runtime import OnnxSession

    sessions = [OnnxSession(p, name=p.stem, intra_op_threads=1) for p in paths]
    times: list[list[float]] = [[] for _ in paths]
    for i in range(calls + 50):
        order = range(len(paths)) if i % 2 == 0 else reversed(range(len(paths)))
        for k in order:
            start = time.perf_counter()
            sessions[k].run(inputs[i % len(inputs)])
            if i >= 50:  # the first calls warm the sessions up
                times[k].append(time.perf_counter() - start)
    return [1000 * float(np.median(t)) for t in times]
