"""Nothing answered is lost: an image whose request was answered is kept, even if its worker dies next.

The report: `kill -9` of one worker during 30 s of /api/predict at 16 clients lost 196 of 2,613
answered images, no metric counted the loss, and .tmp files stayed behind. Here a real gunicorn
(gunicorn.conf.py, two workers, loopback) answers /api/predict while the test holds the SQLite
write lock, so that no answered image can have reached the database; then every gunicorn process
is killed with SIGKILL, the lock released, and gunicorn started again: every answered image must
be in the store, no temporary file left, and the recovery counted.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from prometheus_client import REGISTRY

from models.image import InputImage
from store import ImageStore

ROOT = Path(__file__).resolve().parents[2]
START_SECONDS = 120


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def digit_png(n: int) -> bytes:
    """A different drawn stroke for each n (so each image has its own SHA-256)."""
    canvas = np.full((280, 280), 255, np.uint8)
    x = 90 + n % 100
    canvas[50:230, x : x + 28] = 0
    canvas[50:70, x - 40 : x + 28] = 0
    buf = io.BytesIO()
    Image.fromarray(canvas).save(buf, format="PNG")
    return buf.getvalue()


@contextmanager
def gunicorn(folder: Path, port: int) -> Iterator[subprocess.Popen]:
    """Run gunicorn -c gunicorn.conf.py (two workers, only the digits model, saving on) in its own session."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VISION_")}
    env.update(
        {
            "GUNICORN_BIND": f"127.0.0.1:{port}",
            "GUNICORN_WORKERS": "2",
            "GUNICORN_THREADS": "4",
            "PROMETHEUS_MULTIPROC_DIR": str(folder / "metrics"),
            "DATABASE_URL": f"sqlite:///{folder / 'images.db'}",
            "VISION_IMAGE_DIR": str(folder / "images"),
            "VISION_SAVE_IMAGES": "true",
            "VISION_LOG_LEVEL": "WARNING",
            "VISION_MODELS": json.dumps({"numbers": {"type": "numbers", "path": "models/numbers.onnx"}}),
            "VISION_CLASSIFIER_DIRS": "[]",
            "VISION_DEFAULT_CLASSIFIER": "numbers",
        }
    )
    log = open(folder / "gunicorn.log", "ab")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "-c", "gunicorn.conf.py", "app:create_app()"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the test can kill every worker at once
    )
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                text = (folder / "gunicorn.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"gunicorn did not start (exit {proc.poll()}):\n{text}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def predict(port: int, data: bytes) -> int:
    """POST a PNG to /api/predict; return the status (200, or 422 under the threshold: both answered)."""
    body = json.dumps({"image": "data:image/png;base64," + base64.b64encode(data).decode()}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/predict", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code


def stored_hashes(folder: Path) -> set[str]:
    with sqlite3.connect(folder / "images.db") as conn:
        return {row[0] for row in conn.execute("SELECT sha256 FROM images")}


def temporaries(folder: Path) -> list[Path]:
    return [p for p in (folder / "images").rglob("*") if p.is_file() and ".tmp" in p.name]


@pytest.mark.slow
def test_answered_images_survive_kill_9_of_every_worker(tmp_path):
    port = free_port()
    answered: set[str] = set()
    with gunicorn(tmp_path, port) as proc:
        # A leftover of an earlier crash: a dead process's journal folder with a half-written file.
        dead = tmp_path / "images" / ".journal" / "999999-deadbeef"
        dead.mkdir(parents=True)
        (dead / "lock").touch()
        (dead / ".tmp-half-written").write_bytes(b"\x89PNG partial")
        # Hold the database's write lock: the writers can keep nothing until the workers are killed.
        holder = sqlite3.connect(tmp_path / "images.db", isolation_level=None, timeout=30)
        holder.execute("BEGIN IMMEDIATE")
        for n in range(24):
            data = digit_png(n)
            if predict(port, data) in (200, 422):
                answered.add(hashlib.sha256(data).hexdigest())
        assert len(answered) == 24
        os.killpg(proc.pid, signal.SIGKILL)  # right after the answers, every process, no goodbye
        proc.wait(timeout=10)
        holder.rollback()
        holder.close()
    assert not answered & stored_hashes(tmp_path)  # none had reached the database

    port = free_port()
    with gunicorn(tmp_path, port):
        deadline = time.monotonic() + 30
        while not answered <= stored_hashes(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert answered <= stored_hashes(tmp_path), f"lost {len(answered - stored_hashes(tmp_path))}"
        # A live worker may be writing a temporary of its own (recovering, thumbnails) at this
        # instant: only a temporary that stays is a leftover.
        deadline = time.monotonic() + 15
        while (leftovers := temporaries(tmp_path)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert leftovers == []
        assert not dead.exists()
        folders = [p.name for p in (tmp_path / "images" / ".journal").iterdir()]
        assert all(not name.startswith("999999-") for name in folders)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
        recovered = sum(
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("image_store_recovered_total")
        )
        assert recovered == len(answered)


def test_a_full_queue_drops_are_counted(tmp_path):
    """The one way an image is still not kept (the writer cannot keep up): counted, never silent."""
    store = ImageStore(f"sqlite:///{tmp_path / 'images.db'}", tmp_path / "images", queue_size=1, queue_wait=0)
    store.writer.pool.start = lambda: None  # the writer takes nothing: the queue stays full
    image = InputImage(pixels=np.zeros((4, 4), np.uint8), format="PNG", source="raw", data=digit_png(1))

    def dropped() -> float:
        return REGISTRY.get_sample_value("image_store_dropped_total", {"reason": "queue_full"}) or 0.0

    before = dropped()
    assert store.submit(image, endpoint="predict", model="numbers", prediction="1", confidence=0.9)
    assert store.submit(image, endpoint="predict", model="numbers", prediction="1", confidence=0.9) is None
    assert dropped() == before + 1
    # The queued image waits in the journal; the dropped one is marked so, and the next start
    # (once this process is gone) keeps only the first.
    assert store.journal.pending == 1
    store.journal.close()  # as the kernel does for a dead process: the lock is released
    other = ImageStore(f"sqlite:///{tmp_path / 'images.db'}", tmp_path / "images")
    other.ensure_schema()
    assert other.list()[1] == 1
    other.close()


def test_a_journalled_image_is_on_disk_before_submit_returns(tmp_path):
    """What the request pays for: one small file, written and renamed, before the answer."""
    store = ImageStore(f"sqlite:///{tmp_path / 'images.db'}", tmp_path / "images")
    store.writer.pool.start = lambda: None
    data = digit_png(2)
    image = InputImage(pixels=np.zeros((4, 4), np.uint8), format="PNG", source="raw", data=data)
    image_id = store.submit(image, endpoint="predict", model="numbers", prediction="1", confidence=0.9)
    (segment,) = (tmp_path / "images" / ".journal").rglob("*.log")
    assert segment.read_bytes().endswith(data) and image_id.encode() in segment.read_bytes()
    # Another store on the same folder (the next start) keeps it once this one's process is gone.
    store.journal.close()  # as the kernel does for a dead process: the lock is released
    other = ImageStore(f"sqlite:///{tmp_path / 'images.db'}", tmp_path / "images")
    other.ensure_schema()
    record = other.get(image_id)
    assert record is not None and record.sha256 == hashlib.sha256(data).hexdigest()
    assert record.endpoint == "predict" and record.confidence == 0.9
    assert not segment.exists()
    other.close()
