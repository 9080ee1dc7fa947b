"""Read the same line images with our OCR, Tesseract 5 and RapidOCR; score them side by side.

Tesseract runs as its command-line tool (`--psm 7`: one text line, a whitelist of our charset),
one process per image with one thread. RapidOCR (PP-OCRv6 small, ONNX, in its own venv: see
bench/ocr_rapidocr.txt) runs in one long-lived worker process, angle classifier off, one thread.
Its answers are NFKC-folded before scoring (its recogniser writes full-width brackets and
asterisks, （）＊, for ours ()*). Cost is CPU time per line (process time of ours and of the
RapidOCR worker, children's rusage for Tesseract), so other load on the machine does not count.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import subprocess
import tempfile
import time
import unicodedata
from pathlib import Path

import cv2
import numpy as np

from training.ocr_eval import HeldOut, score_lines
from training.ocr_render import CHARSET

ROOT = Path(__file__).resolve().parent.parent
WHITELIST = CHARSET + " "  # the space lets it keep word gaps
RAPIDOCR_VENV = ROOT / "bench" / "peers" / ".venv-rapidocr"


def tesseract_version() -> str | None:
    """Return 'tesseract X.Y.Z', or None when it is not installed."""
    exe = shutil.which("tesseract")
    if exe is None:
        return None
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
    first = (out.stdout or out.stderr).splitlines()
    return first[0].strip() if first else "tesseract"


def tesseract_read(image: np.ndarray, psm: int = 7, whitelist: str = WHITELIST) -> str:
    """Read one image with Tesseract (psm 7: one text line; 10: one character) and return its text."""
    ok, png = cv2.imencode(".png", image)
    if not ok:
        raise ValueError("cannot encode image")
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    cmd = [
        "tesseract", "stdin", "stdout", "--psm", str(psm), "-l", "eng",
        "-c", f"tessedit_char_whitelist={whitelist}",
        "-c", "preserve_interword_spaces=1",
    ]  # fmt: skip
    out = subprocess.run(cmd, input=png.tobytes(), capture_output=True, env=env, check=False)
    return out.stdout.decode("utf-8", "replace").strip()


def tesseract_timed(image: np.ndarray, psm: int = 7, whitelist: str = WHITELIST) -> list:
    """[text, CPU ms] of one Tesseract reading (its child process's rusage)."""
    start = _children_cpu()
    text = tesseract_read(image, psm=psm, whitelist=whitelist)
    return [text, 1000 * (_children_cpu() - start)]


def fold(text: str) -> str:
    """NFKC-fold a peer's answer: full-width （）＊ and digits become ()* and 0-9."""
    return unicodedata.normalize("NFKC", text)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class RapidOcr:
    """A RapidOCR worker process in its own venv: `read(image)` returns (folded text, CPU ms)."""

    def __init__(self, python: Path | None = None):
        python = python or RAPIDOCR_VENV / "bin" / "python"
        self.folder = tempfile.TemporaryDirectory(prefix="ocr-rapid-")
        self.proc = subprocess.Popen(
            [str(python), str(ROOT / "bench" / "ocr_rapidocr_worker.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        json.loads(self.proc.stdout.readline())  # {"ready": true} once the models are loaded
        self.version = rapidocr_version(python)

    def read(self, image: np.ndarray) -> tuple[str, float]:
        """Read one image (written as PNG for the worker)."""
        path = Path(self.folder.name) / "line.png"
        cv2.imwrite(str(path), image)
        self.proc.stdin.write(f"{path}\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        return fold(answer["text"]), answer["cpu_ms"]

    def close(self) -> None:
        """Stop the worker and remove its folder."""
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        self.folder.cleanup()


def rapidocr_version(python: Path | None = None) -> str:
    """The rapidocr package version in its venv."""
    return subprocess.run(
        [str(python or RAPIDOCR_VENV / "bin" / "python"), "-c", "import importlib.metadata as m; print(m.version('rapidocr'))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


def rapidocr_available(python: Path | None = None) -> bool:
    """True when RapidOCR's venv exists (python -m bench.ocr_vs_tesseract --setup makes it)."""
    return (python or RAPIDOCR_VENV / "bin" / "python").is_file()


def score_peer(expected: list[str], read: list[str], cpu_ms: list[float]) -> dict:
    """Score single lines read by one reader: exact, exact ignoring spaces, characters, CPU ms."""
    scored = score_lines([[e] for e in expected], [[r] for r in read])
    spaceless = sum(e.replace(" ", "") == r.replace(" ", "") for e, r in zip(expected, read, strict=True))
    return {
        **scored,
        "line_accuracy_ignoring_spaces": 100 * spaceless / max(len(expected), 1),
        "ms_per_image": float(np.mean(cpu_ms)) if cpu_ms else 0.0,
    }


def compare(
    model_path: Path,
    sets: list[HeldOut],
    peers: tuple[str, ...] = ("tesseract", "rapidocr"),
    cache: Path | None = None,
) -> dict:
    """Read every single-line set with ours and each installed peer; score them on the same lines.

    `cache` (a JSON file) keeps the peers' answers by set and image bytes, so a rerun with another
    model of ours reads only with ours.
    """
    saved = json.loads(cache.read_text()) if cache is not None and cache.is_file() else {}
    from models.ocr import OcrModel

    model = OcrModel("ocr", Path(model_path))
    model.warmup()
    result: dict = {"whitelist": WHITELIST, "sets": {}, "peers": []}
    if "tesseract" in peers and tesseract_version():
        result["tesseract"] = tesseract_version()
        result["peers"].append("tesseract")
    rapid = None
    if "rapidocr" in peers and rapidocr_available():
        rapid = RapidOcr()
        result["rapidocr"] = f"rapidocr {rapid.version}"
        result["peers"].append("rapidocr")  # started even with a cache: its version is in the result
    try:
        for s in sets:
            expected = [lines[0] for lines in s.lines]
            answers: dict[str, list[str]] = {name: [] for name in ["ours", *result["peers"]]}
            cpu: dict[str, list[float]] = {name: [] for name in answers}
            for image in s.images:
                key = f"{s.name}/{hashlib.sha1(image.tobytes()).hexdigest()}"
                start = time.process_time()
                answers["ours"].append("\n".join(line["text"] for line in model(image)["lines"]))
                cpu["ours"].append(1000 * (time.process_time() - start))
                for name in result["peers"]:
                    if f"{name}/{key}" not in saved:
                        if name == "tesseract":
                            saved[f"{name}/{key}"] = tesseract_timed(image)
                        else:
                            saved[f"{name}/{key}"] = list(rapid.read(image))
                    text, ms = saved[f"{name}/{key}"]
                    answers[name].append(text)
                    cpu[name].append(ms)
            row = {"description": s.description, "lines": len(expected)}
            row.update({name: score_peer(expected, answers[name], cpu[name]) for name in answers})
            row["examples"] = [
                {"expected": e, **{name: answers[name][i] for name in answers}}
                for i, e in enumerate(expected)
                if any(answers[name][i] != e for name in answers)
            ][:5]
            result["sets"][s.name] = row
            print(
                f"{s.name:22s} exact lines: "
                + "  ".join(f"{n} {row[n]['line_accuracy']:5.1f}%" for n in answers)
                + "   chars: "
                + "  ".join(f"{n} {row[n]['char_accuracy']:6.2f}%" for n in answers),
                flush=True,
            )
    finally:
        if rapid is not None:
            rapid.close()
        if cache is not None:
            cache.write_text(json.dumps(saved))
    return result
