"""The base of every image classifier: a labels file that fits the model, and top-k answers.

A classifier is served at /api/classifier/<name> because its class subclasses `Classifier`;
adding one is its module plus one line in `models.registry.MODEL_TYPES`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from models.runtime import LabelMismatchError, ModelFileError, ServedModel

_NUMBERED_LINE = re.compile(r"^(\d+)\s+(.+)$")


def read_labels(path: Path) -> list[str]:
    """Read class names, one per line; accept Teachable Machine's "0 Name" form too."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ModelFileError(f"labels file not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise ModelFileError(f"labels file {path} is not UTF-8: {exc}") from None
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        raise ModelFileError(f"labels file {path} is empty")
    matches = [_NUMBERED_LINE.match(line) for line in lines]
    # Only strip numbers when every line is "<i> Name" with i = 0, 1, 2...: a plain name may
    # itself start with a digit.
    if all(m and int(m.group(1)) == i for i, m in enumerate(matches)):
        lines = [m.group(2).strip() for m in matches]
    return lines


class Classifier(ServedModel):
    """An image classifier: softmax over the labels of a labels file, answered as the top k labels.

    A subclass sets `kind`, `input_mode`, `made_for` and `preprocess`; where its labels file
    lies by default (`labels_file`, beside the model) and how it is read (`read_labels`) may
    be changed. The `labels` option names another file.
    """

    side_files = ("labels",)
    # The default labels file, beside the model; {stem} is the model file's name without suffix.
    labels_file: ClassVar[str] = "{stem}_labels.txt"
    # What the classifier was trained on: the doodle page offers "drawings" classifiers, the
    # photo page preselects a "photos" one.
    made_for: ClassVar[Literal["drawings", "photos"]]
    # Decimals of the confidences answered; None answers them as computed.
    decimals: ClassVar[int | None] = 4

    def __init__(
        self, name: str, path: Path, *, threads: int = 1, labels: Path | None = None, **options: Any
    ):
        # The labels are read before the model: a bad labels file fails before any conversion.
        self.source = Path(path)
        default = self.source.with_name(self.labels_file.format(stem=self.source.stem))
        self.labels_path = Path(labels) if labels is not None else default
        self.labels: list[str] = self.read_labels(self.labels_path)
        super().__init__(name, self.onnx_path(self.source), threads=threads, **options)
        outputs = self.output_count()
        if outputs != len(self.labels):
            # Fatal at start-up: serving would answer with the wrong names.
            raise LabelMismatchError(
                f"labels file {self.labels_path} has {len(self.labels)} labels but model {self.source} "
                f"has {outputs} outputs; they must match"
            )

    @staticmethod
    def read_labels(path: Path) -> list[str]:
        """Read the labels file."""
        return read_labels(path)

    def onnx_path(self, source: Path) -> Path:
        """Return the ONNX file to serve for the configured model file (itself, here)."""
        return source

    def output_count(self) -> int:
        """Return how many classes the model scores (one inference when its shape does not say)."""
        dim = self.onnx.session.get_outputs()[0].shape[-1]
        if isinstance(dim, int):
            return dim
        return int(self.predict(self.warmup_input()).shape[-1])

    def postprocess(self, y: np.ndarray, context: Any, *, top: int = 3, **options: Any) -> dict:
        """Return the best label, its probability, and the `top` labels by probability (1 at least)."""
        probs = np.asarray(y, dtype=np.float64).reshape(-1)
        k = max(1, min(int(top), len(self.labels)))
        order = np.argsort(-probs, kind="stable")[:k]
        ranked = [{"label": self.labels[i], "confidence": self.confidence(probs[i])} for i in order]
        return {"label": ranked[0]["label"], "confidence": ranked[0]["confidence"], "top": ranked}

    def confidence(self, p: float) -> float:
        """Return a probability as answered: rounded to `decimals` when set."""
        return float(p) if self.decimals is None else round(float(p), self.decimals)

    def describe(self) -> dict:
        """Describe the model and its labels file."""
        return {**super().describe(), "labels_file": str(self.labels_path)}
