"""A `make run` install serves every Teachable Machine export format through HTTP, without TensorFlow.

serve.py runs in a subprocess whose imports of TensorFlow, Keras, tf_keras, tf2onnx, training/ and
bench/ fail (a meta-path blocker in sitecustomize): exports dropped into a classifier folder, and
the same exports uploaded as zips, answer /api/classifier/<name> within 1e-4 of each format's own
runtime (the quantized model: within its stated tolerance), and the /classify page offers them.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.blueprints.test_classifier_upload import DATA, EXPORTS, export_zip
from tests.models.test_converters import FLOAT_TOLERANCE, QUANTIZED_TOLERANCE, bare

ROOT = Path(__file__).resolve().parents[2]
REFERENCES = json.loads((DATA / "reference_own_images.json").read_text())
BLOCKED = ("tensorflow", "keras", "tf_keras", "tf2onnx", "training", "bench")
SITECUSTOMIZE = f"""
import importlib.abc, os, sys
BLOCKED = {BLOCKED!r}
class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            with open(os.environ["BLOCKED_IMPORTS_LOG"], "a") as log:
                log.write(name + "\\n")
            raise ImportError(f"{{name}} is blocked: serving must not import it")
sys.meta_path.insert(0, Blocked())
"""
# Every committed export, by (reference key, files).
DROPPED = {
    "mug-h5": ("flask-mug/keras_model.h5", EXPORTS["keras_h5"][1]),
    "snacks-tfjs": ("snackbars-tfjs/model.json", EXPORTS["tfjs"][1]),
    "fruit-tflite": ("fruit-tflite/model_unquant.tflite", EXPORTS["tflite"][1]),
    "fruit-quantized": ("fruit-tflite/model.tflite", EXPORTS["tflite_quantized"][1]),
    "digits-tfjs": ("digits-tfjs/model.json", EXPORTS["tfjs"][1]),
    "likes-tflite": ("likes-tflite/model_unquant.tflite", EXPORTS["tflite"][1]),
}
UPLOADED = {f"up-{fmt.replace('_', '-')}": fmt for fmt in EXPORTS}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    """The environment of a server on its own store and classifier folder, with nothing inherited."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VISION_") and k != "DATABASE_URL"}
    env.update(
        VISION_SAVE_IMAGES="false",
        VISION_LOG_LEVEL="INFO",
        VISION_IMAGE_DIR=str(tmp_path / "images"),
        VISION_DATABASE_URL=f"sqlite:///{tmp_path / 'store.db'}",
        VISION_CLASSIFIER_DIRS=json.dumps([str(tmp_path / "classifiers")]),
        PYTHONDONTWRITEBYTECODE="1",
        **settings,
    )
    return env


def call(url: str, data: bytes | None = None, *, method: str | None = None, headers=None, timeout=60):
    """Send one HTTP request; return (status, parsed JSON or text)."""
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, body, kind = response.status, response.read(), response.headers.get_content_type()
    except urllib.error.HTTPError as exc:
        status, body, kind = exc.code, exc.read(), exc.headers.get_content_type()
    return status, (json.loads(body) if kind == "application/json" and body else body.decode())


def multipart(fields: dict[str, str | tuple[str, bytes, str]]) -> tuple[bytes, dict[str, str]]:
    """Encode form fields (text, or (filename, bytes, type) for a file) as multipart/form-data."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        if isinstance(value, tuple):
            filename, data, mime = value
            head = f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\nContent-Type: {mime}'
        else:
            head, data = f'Content-Disposition: form-data; name="{name}"', value.encode()
        parts.append(f"--{boundary}\r\n{head}\r\n\r\n".encode() + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def wait_ready(base: str, process: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    """Wait until the server answers /ready with 200 (every model loaded), or fail with its log."""
    deadline = time.monotonic() + timeout
    answer = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            answer = call(f"{base}/ready", timeout=5)
            if answer[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    pytest.fail(f"the server was not ready in {timeout} s ({answer}):\n{log.read_text()[-4000:]}")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[tuple[str, Path, dict[str, str]]]:
    """serve.py (as `make run` starts it) with TensorFlow blocked and every export dropped in."""
    tmp = tmp_path_factory.mktemp("no-tensorflow")
    dropped = {}
    for name, (key, files) in DROPPED.items():
        source = DATA / key.split("/")[0]
        (tmp / "classifiers" / name).mkdir(parents=True)
        for file in files:
            shutil.copyfile(source / file, tmp / "classifiers" / name / file)
        dropped[name] = key
    (tmp / "site").mkdir()
    (tmp / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
    port = free_port()
    env = server_env(tmp, PYTHONPATH=str(tmp / "site"), BLOCKED_IMPORTS_LOG=str(tmp / "blocked.log"))
    # The blocker works: TensorFlow (installed with the test extras) cannot be imported.
    probe = subprocess.run(
        [sys.executable, "-c", "import tensorflow"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert probe.returncode != 0 and "blocked" in probe.stderr, probe.stderr[-500:]
    (tmp / "blocked.log").unlink()
    log = tmp / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "serve.py", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, process, log)
        yield base, tmp, dropped
    finally:
        stop(process)


def classify(base: str, name: str, image: str) -> dict[str, float]:
    """Send a reference image as the /classify page does and return every label's probability."""
    body, headers = multipart(
        {"image": (image, (DATA / "images" / image).read_bytes(), "image/png"), "top": "1000"}
    )
    status, answer = call(f"{base}/api/classifier/{name}", body, headers=headers)
    assert status == 200, answer
    return {row["label"]: row["confidence"] for row in answer["top"]}


def check_against_reference(base: str, name: str, key: str) -> float:
    """Classify the five images; return the largest difference from the format's own runtime."""
    reference = REFERENCES[key]
    tolerance = QUANTIZED_TOLERANCE if key.endswith("/model.tflite") else FLOAT_TOLERANCE
    labels = [bare(label) for label in reference["labels"]]
    worst = 0.0
    for image, probabilities in zip(reference["images"], reference["probabilities"], strict=True):
        got = classify(base, name, image)
        assert sorted(got) == sorted(labels), name
        for label, expected in zip(labels, probabilities, strict=True):
            worst = max(worst, abs(got[label] - expected))
        if tolerance == QUANTIZED_TOLERANCE:  # a few 1/256 steps may move, never the answer here
            assert max(got, key=got.get) == labels[probabilities.index(max(probabilities))]
    assert worst <= tolerance, f"{name} ({key}) differs by {worst:.2e} from its reference"
    return worst


@pytest.mark.slow
def test_every_dropped_in_export_is_served_within_its_reference(server):
    base, tmp, dropped = server
    assert {"mug-h5", "snacks-tfjs", "fruit-tflite", "fruit-quantized"} <= dropped.keys()
    worst = {name: check_against_reference(base, name, key) for name, key in dropped.items()}
    print("max abs diff by export:", {k: f"{v:.1e}" for k, v in worst.items()})
    # Converted at start-up without TensorFlow: each folder now holds its ONNX cache.
    assert all(list((tmp / "classifiers" / name).glob("*.onnx")) for name in dropped)
    assert not (tmp / "blocked.log").exists(), (tmp / "blocked.log").read_text()


@pytest.mark.slow
def test_every_uploaded_zip_is_served_within_its_reference_and_offered_on_the_page(server):
    base, tmp, _ = server
    for name, fmt in UPLOADED.items():
        body, headers = multipart(
            {"name": name, "file": ("converted_model.zip", export_zip(fmt), "application/zip")}
        )
        status, row = call(f"{base}/api/classifier/models", body, headers=headers)
        assert status == 201, row
        assert row["format"] == fmt and row["loaded"]
    keys = {name: "/".join((EXPORTS[fmt][0], EXPORTS[fmt][1][0])) for name, fmt in UPLOADED.items()}
    for name, key in keys.items():
        check_against_reference(base, name, key)
    status, page = call(f"{base}/classify")
    assert status == 200
    for name in (*UPLOADED, "mug-h5", "snacks-tfjs", "fruit-tflite", "fruit-quantized"):
        assert f'value="{name}"' in page
    for name in UPLOADED:
        assert call(f"{base}/api/classifier/models/{name}", method="DELETE")[0] == 204
    assert not (tmp / "blocked.log").exists(), (tmp / "blocked.log").read_text()
