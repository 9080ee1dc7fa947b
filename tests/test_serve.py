"""serve.py (waitress) under a browser's load: the gallery browses without a warning in the log."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.server import free_port
from serve import THREADS, SaturationOnly

ROOT = Path(__file__).resolve().parents[1]
BROWSER_CONNECTIONS = 6  # what Chromium and Firefox open to one host over HTTP/1.1
PER_PAGE = 24  # static/js/gallery.js


class Server:
    """A serve.py process on a loopback port, its log in a file."""

    def __init__(self, tmp_path: Path, *args: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp_path / "serve.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("VISION_")}
        env.pop("WAITRESS_THREADS", None)
        env.update(
            {
                # One small model: start-up in seconds; the gallery needs no model at all.
                "VISION_MODELS": json.dumps({"numbers": {"type": "numbers", "path": "models/numbers.onnx"}}),
                "VISION_CLASSIFIER_DIRS": "[]",
                "VISION_IMAGE_DIR": str(tmp_path / "images"),
                "DATABASE_URL": f"sqlite:///{tmp_path / 'images.db'}",
            }
        )
        cmd = [sys.executable, "serve.py", "--host", "127.0.0.1", "--port", str(self.port), *args]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                with urllib.request.urlopen(self.url + "/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"serve.py not ready (exit {self.proc.poll()}):\n{self.log_text()[-3000:]}")

    def get(self, path: str) -> tuple[int, bytes]:
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return response.status, response.read()

    def post(self, path: str, data: bytes, content_type: str) -> dict:
        request = urllib.request.Request(
            self.url + path, data=data, headers={"Content-Type": content_type}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def server(tmp_path, request) -> Iterator[Server]:
    running = Server(tmp_path, *getattr(request, "param", ()))
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


def drawing(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = np.full((200, 200), 255, np.uint8)
    for _ in range(6):
        x, y = rng.integers(20, 160, 2)
        pixels[y : y + 30, x : x + 8] = 0
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def browse_gallery(server: Server) -> int:
    """Load the gallery page as a browser does: page, its files, the list, then every thumbnail."""
    status, html = server.get("/gallery")
    assert status == 200
    files = re.findall(r'(?:src|href)="(/static/[^"]+)"', html.decode())
    assert any(f.endswith("gallery.js") for f in files)
    with ThreadPoolExecutor(BROWSER_CONNECTIONS) as pool:
        assert all(s == 200 for s, _ in pool.map(server.get, files))
        listing = json.loads(server.get(f"/images?page=1&per_page={PER_PAGE}")[1])
        urls = [item["thumbnail"]["url"] for item in listing["items"]]
        assert all(s == 200 for s, _ in pool.map(server.get, urls))
    return len(urls)


@pytest.mark.slow
def test_gallery_browsing_logs_no_warning(server):
    """A page of 24 thumbnails over 6 connections, reloaded: no queue-depth (or any) warning."""
    ids = [server.post("/images", drawing(i), "image/png")["id"] for i in range(PER_PAGE + 6)]
    deadline = time.monotonic() + 60
    for image_id in ids:  # thumbnails are made in the background: wait until each is served
        while server.get(f"/vignette/{image_id}")[0] != 200:
            assert time.monotonic() < deadline, "thumbnails not made in 60 s"
            time.sleep(0.05)
    before = len(server.log_text())
    for _ in range(5):
        assert browse_gallery(server) == PER_PAGE
    browsing = server.log_text()[before:]
    assert "/vignette/" in browsing  # the access log saw the thumbnails...
    assert "Task queue depth" not in browsing  # ...and waitress never warned about waiting
    assert not [line for line in browsing.splitlines() if " WARNING " in line or " ERROR " in line]
    assert f"with waitress, {THREADS} threads" in server.log_text()


@pytest.mark.slow
@pytest.mark.parametrize("server", [("--threads", "1")], indirect=True)
def test_real_saturation_is_still_reported(server):
    """With one thread and sixteen clients the backlog reaches the pool's size: waitress says so."""
    digit = drawing(0)

    def ask(_: int) -> dict:
        return server.post("/api/predict", digit, "image/png")

    for _ in range(5):
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(ask, range(32)))
        if "Task queue depth" in server.log_text():
            break
    assert re.search(r"WARNING .*waitress\.queue.*Task queue depth is \d+", server.log_text())


@pytest.mark.parametrize(
    ("depth", "threads", "shown"), [(1, 8, False), (7, 8, False), (8, 8, True), (1, 1, True)]
)
def test_queue_warning_shown_only_at_saturation(depth, threads, shown):
    record = logging_record("Task queue depth is %d", depth)
    assert SaturationOnly(threads).filter(record) is shown


def test_other_waitress_queue_records_pass():
    assert SaturationOnly(8).filter(logging_record("queue is %s", "odd"))
    assert SaturationOnly(8).filter(logging_record("no arguments"))


def logging_record(message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("waitress.queue", logging.WARNING, __file__, 1, message, args, None)
