"""Find which export a folder holds, convert it, and pair the ONNX model with its labels."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from models.converters.labels import parse_labels
from models.runtime import LabelMismatchError, ModelFileError, file_sha256

# The file that marks each format, in the order a folder is searched; the float TFLite model
# comes before the quantized one, which only approximates it.
EXPORT_FORMATS = {
    "keras_h5": "keras_model.h5",
    "tfjs": "model.json",
    "tflite": "model_unquant.tflite",
    "tflite_quantized": "model.tflite",
}
CONVERTER = "models.converters"


@dataclass(frozen=True)
class Converted:
    """An export turned into ONNX: the serialized model, its labels, and facts about the conversion."""

    onnx: bytes
    labels: list[str]
    source_format: str
    facts: dict = field(default_factory=dict)

    def save(self, path: Path) -> Path:
        """Write the ONNX model to path and return it."""
        path = Path(path)
        path.write_bytes(self.onnx)
        return path


def find_export(folder: Path) -> tuple[str, Path]:
    """Return the format and main file of the one Teachable Machine export in folder."""
    folder = Path(folder)
    found = [(fmt, folder / name) for fmt, name in EXPORT_FORMATS.items() if (folder / name).is_file()]
    families = {fmt.split("_quantized")[0] for fmt, _ in found}
    if not found:
        names = ", ".join(EXPORT_FORMATS.values())
        raise ModelFileError(f"{folder.name}: no Teachable Machine export found (expected one of {names})")
    if len(families) > 1:
        raise ModelFileError(
            f"{folder.name}: holds more than one export ({', '.join(p.name for _, p in found)})"
        )
    return found[0]


def finish(
    model: onnx.ModelProto, facts: dict, labels: list[str], source_format: str, start: float
) -> Converted:
    """Check the labels against the outputs, stamp the labels into the model, and serialize it."""
    if facts["classes"] != len(labels):
        raise LabelMismatchError(
            f"the labels name {len(labels)} classes but the model has {facts['classes']} outputs; they must match"
        )
    model.metadata_props.add(key="source_format", value=source_format)
    model.metadata_props.add(key="labels", value=json.dumps(labels, ensure_ascii=False))
    data = model.SerializeToString()
    facts = {**facts, "convert_s": round(time.perf_counter() - start, 3), "onnx_bytes": len(data)}
    return Converted(onnx=data, labels=labels, source_format=source_format, facts=facts)


def stamp(path: Path, version: str | None) -> dict[str, str]:
    """Return the ONNX metadata that says where the model came from, or raise if the file is missing."""
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    return {
        "version": version or f"teachable-{file_sha256(path)[:12]}",
        "source": path.name,
        "converter": CONVERTER,
    }


def convert_keras_h5(h5: Path, labels: Path | None = None, *, version: str | None = None) -> Converted:
    """Convert keras_model.h5 (+ labels.txt beside it unless given) with h5py."""
    from models.converters.keras_h5 import convert_h5

    start = time.perf_counter()
    h5 = Path(h5)
    names = parse_labels(Path(labels) if labels else h5.parent / "labels.txt")
    model, facts = convert_h5(h5, stamp(h5, version))
    return finish(model, facts, names, "keras_h5", start)


def convert_tfjs_export(
    model_json: Path, metadata_json: Path | None = None, *, version: str | None = None
) -> Converted:
    """Convert model.json + its weights files (+ metadata.json beside it unless given for the labels)."""
    from models.converters.tfjs import convert_tfjs, read_labels

    start = time.perf_counter()
    model_json = Path(model_json)
    names = read_labels(Path(metadata_json) if metadata_json else model_json.parent / "metadata.json")
    model, facts = convert_tfjs(model_json, stamp(model_json, version))
    return finish(model, facts, names, "tfjs", start)


def convert_tflite_export(path: Path, labels: Path | None = None, *, version: str | None = None) -> Converted:
    """Convert a float or quantized .tflite (+ labels.txt beside it unless given)."""
    from models.converters.tflite import convert_tflite

    start = time.perf_counter()
    path = Path(path)
    names = parse_labels(Path(labels) if labels else path.parent / "labels.txt")
    model, facts = convert_tflite(path, stamp(path, version))
    source_format = "tflite_quantized" if facts["quantized"] else "tflite"
    return finish(model, facts, names, source_format, start)


def convert_export(folder: Path, *, version: str | None = None) -> Converted:
    """Convert the Teachable Machine export found in folder, whichever format it is."""
    fmt, path = find_export(folder)
    if fmt == "keras_h5":
        return convert_keras_h5(path, version=version)
    if fmt == "tfjs":
        return convert_tfjs_export(path, version=version)
    return convert_tflite_export(path, version=version)
