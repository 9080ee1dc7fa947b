"""OCR of printed lines (OCR-B digits, GS1 element strings): find lines, cut glyphs, classify each.

`models.ocr_segment.segment` cuts an image into lines of glyph windows (`models.ocr_line` fits each
line's band and cuts its glyphs); this module classifies every glyph in one batched CNN call and
rebuilds the lines with spaces from the glyph pitch, their boxes and their GS1 fields.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from models import gs1, ocr_rescue
from models.ocr_decode import DIGITS, decode_line
from models.ocr_line import GLYPH_SIZE, WINDOW, Glyph
from models.ocr_segment import TARGET_CAP, Segmentation, segment
from models.runtime import ModelFileError, ServedModel

__all__ = [
    "GLYPH_SIZE",
    "TARGET_CAP",
    "WINDOW",
    "Glyph",
    "OcrModel",
    "Segmentation",
    "read_charset",
    "segment",
]

DEFAULT_CHARSET = "0123456789()*<>+-/ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# An image holding more glyphs is refused (422 too_much_text), found before their windows are cut.
MAX_GLYPHS = 4000
# Count the spaces across glyphs dropped from a gap (_spaces). Chosen on training.ocr_eval's
# development sets: exact lines of 2400 (--n 600) 2304 -> 2306 (edit errors 693 -> 690), of 800
# (--n 200) 775 either way.
SPAN_SPACES = True
# Beside a clean line (under CLEAN of its glyphs called other print, at least CLEAN_GLYPHS glyphs),
# a line with at least MIXED of its glyphs called other print, or with at most SHORT glyphs, is
# other print read as a line. Values set beforehand, checked on training.ocr_eval's development
# sets: exact lines of 2400 (--n 600) 2319 -> 2321, dev-fonts of 200 (--n 200) 184 -> 186, no set worse.
CLEAN = 0.1
CLEAN_GLYPHS = 8
MIXED = 0.3
SHORT = 3


def other_print_lines(rejected: list[np.ndarray]) -> set[int]:
    """Indices of the lines to drop, from each line's flags of glyphs called other print."""
    fractions = [float(r.mean()) if r.size else 1.0 for r in rejected]
    drop = {k for k, f in enumerate(fractions) if f >= 0.5}
    clean = [k for k, r in enumerate(rejected) if fractions[k] < CLEAN and r.size >= CLEAN_GLYPHS]
    if clean:
        drop |= {
            k for k, r in enumerate(rejected) if k not in clean and (fractions[k] >= MIXED or r.size <= SHORT)
        }
    return drop


def _spaces(glyphs: list[Glyph], previous: int, k: int, gaps: list[int]) -> int:
    """Spaces between two glyphs kept in a line, across any dropped between them.

    Other print in a gap splits it into steps under the 1.5 pitches a space takes; the spaces are
    counted from the whole distance too (when SPAN_SPACES is on), and the larger count kept.
    """
    spaces = sum(gaps[previous + 1 : k + 1])
    if k - previous == 1 or not SPAN_SPACES:
        return spaces
    step = sum(g.advance for g in glyphs[previous + 1 : k + 1])
    return max(spaces, max(1, int(round(step)) - 1) if step > 1.5 else 0)


def read_charset(path: Path, metadata: dict[str, str]) -> str:
    """Return the model's charset: ONNX metadata first, then ocr_charset.txt beside the model."""
    if metadata.get("charset"):
        return metadata["charset"]
    text_file = Path(path).with_name(Path(path).stem + "_charset.txt")
    if text_file.is_file():
        return text_file.read_text(encoding="utf-8").strip("\n")
    return DEFAULT_CHARSET


class OcrModel(ServedModel):
    """Read printed lines: every line's text, per-character confidences and boxes, GS1 fields."""

    kind = "ocr"
    input_mode = "gray"

    def __init__(self, name: str, path: Path, *, threads: int = 1, **options: Any):
        super().__init__(name, path, threads=threads, **options)
        meta = self.onnx.session.get_modelmeta().custom_metadata_map
        self.charset = read_charset(self.path, meta)
        # A model trained with a reject class (metadata reject=1) has one output after the charset:
        # glyph windows cut from other print around the line, dropped from the answer.
        self.reject = meta.get("reject") == "1"
        classes = self.onnx.session.get_outputs()[0].shape[-1]
        if isinstance(classes, int) and classes != len(self.charset) + self.reject:
            raise ModelFileError(
                f"{self.path} has {classes} classes but its charset has {len(self.charset)}"
                + (" (+1 reject)" if self.reject else "")
            )
        self.digit_index = np.array([self.charset.index(d) for d in DIGITS])

    def preprocess(self, pixels: np.ndarray, **options: Any) -> tuple[np.ndarray, Segmentation]:
        """Cut an image into glyphs (see `segment`): their batch, and the segmentation to rebuild lines."""
        seg = segment(pixels, max_glyphs=MAX_GLYPHS)
        return seg.tensor(), seg

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Classify a batch of glyphs in one ONNX Runtime call."""
        if x.shape[0] == 0:
            return np.zeros((0, len(self.charset)), np.float32)
        return self.onnx.run(x)

    def postprocess(self, y: np.ndarray, seg: Segmentation, *, format: str = "text", **options: Any) -> dict:
        """Turn glyph probabilities into lines of text, characters, digits and GS1 fields."""
        y = np.asarray(y, np.float32)
        n = len(seg.glyphs)
        # Whether a line is other print is decided on the full windows; the tight ones only help read
        # the glyphs of a line that is kept.
        best = y[:n].argmax(axis=1) if n else np.zeros(0, int)
        probs = self._second_chance(y, seg)
        lines, characters, digit_probs = [], [], []
        ends = np.cumsum([0] + [len(g) for g in seg.lines])
        drop = other_print_lines(
            [best[a:b] == len(self.charset) for a, b in zip(ends[:-1], ends[1:], strict=True)]
        )
        i = 0
        for n_line, glyphs in enumerate(seg.lines):
            first = i
            i += len(glyphs)
            if self.reject and n_line in drop:
                continue  # other print: most of its glyphs are not in the charset, or beside a clean line
            gaps = [g.spaces_before for g in glyphs] + [0]
            text, chars, spaces = [], [], 0
            previous = -1
            for k, char, confidence in decode_line(probs[first:i], self.charset, self.reject, gaps[:-1]):
                spaces = _spaces(glyphs, previous, k, gaps) if text else 0
                previous = k
                text.append(" " * spaces + char)
                chars.append({"char": char, "confidence": round(confidence, 4), "box": seg.box(glyphs[k])})
                if char in DIGITS:
                    d = probs[first + k, self.digit_index]
                    digit_probs.append([round(float(v), 6) for v in d / max(float(d.sum()), 1e-9)])
            if not chars:
                continue
            line_text = "".join(text)
            boxes = np.array([c["box"] for c in chars])
            x0, y0 = boxes[:, 0].min(), boxes[:, 1].min()
            x1, y1 = (boxes[:, 0] + boxes[:, 2]).max(), (boxes[:, 1] + boxes[:, 3]).max()
            lines.append(
                {
                    "text": line_text,
                    "digits": "".join(c for c in line_text if c in DIGITS),
                    "confidence": min(c["confidence"] for c in chars),
                    "box": [int(x0), int(y0), int(x1 - x0), int(y1 - y0)],
                    "characters": chars,
                    "fields": gs1.parse(line_text),
                }
            )
            characters.extend(chars)
        text = "\n".join(line["text"] for line in lines)
        fields = next((line["fields"] for line in lines if line["fields"]), {})
        result = {
            "text": text,
            "digits": "".join(line["digits"] for line in lines),
            "confidence": min((c["confidence"] for c in characters), default=0.0),
            "characters": characters,
            "lines": lines,
            "fields": fields,
            "deskew_degrees": seg.angle,
            "inverted": seg.inverted,
        }
        if format == "probabilities":
            # The original service's answer: for each digit, its 10 probabilities (0-9).
            result["probabilities"] = digit_probs
        return result

    def _second_chance(self, probs: np.ndarray, seg: Segmentation) -> np.ndarray:
        """One row per glyph: glyphs called other print read again (models.ocr_rescue)."""
        glyphs = seg.glyphs
        if not self.reject:
            return probs[: len(glyphs)].copy()
        reject = len(self.charset)
        main = ocr_rescue.second_chance(probs, glyphs, reject)
        if ocr_rescue.LEAST:
            main = ocr_rescue.on_pitch(main, probs, seg.lines, reject, charset=self.charset)
        return main

    def warmup_input(self) -> np.ndarray:
        return np.zeros((1, GLYPH_SIZE, GLYPH_SIZE, 1), np.float32)

    def describe(self) -> dict:
        return {**super().describe(), "charset": self.charset}
