"""A model added or removed through one gunicorn worker is served (or gone) in every worker, without a restart."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.blueprints.test_classifier_formats import call, free_port, multipart, server_env, stop, wait_ready
from tests.blueprints.test_classifier_upload import DATA, export_zip

ROOT = Path(__file__).resolve().parents[2]
ACCESS = re.compile(r"\[(\d+)\] vision\.access rid=\S+: (\w+) (\S+) (\d{3}) ")


def served_by(log: Path, method: str, path: str) -> dict[int, set[int]]:
    """Return, by worker pid, the statuses the access log shows for one route."""
    found: dict[int, set[int]] = {}
    for pid, m, p, status in ACCESS.findall(log.read_text()):
        if (m, p) == (method, path):
            found.setdefault(int(pid), set()).add(int(status))
    return found


def classify_many(base: str, count: int = 48) -> list[int]:
    """Classify from four clients at once, a new connection each time, so both workers answer."""
    image = (DATA / "images" / "red.png").read_bytes()

    def one(_):
        return call(f"{base}/api/classifier/fresh", image, headers={"Content-Type": "image/png"})[0]

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, range(count)))


@pytest.mark.slow
def test_every_gunicorn_worker_serves_an_upload_and_forgets_a_removal(tmp_path):
    port = free_port()
    env = server_env(
        tmp_path,
        GUNICORN_BIND=f"127.0.0.1:{port}",
        GUNICORN_WORKERS="2",
        GUNICORN_THREADS="2",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
    )
    log = tmp_path / "gunicorn.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app:create_app()"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, process, log)
        deadline = time.monotonic() + 120
        while len(set(re.findall(r"app ready in pid (\d+)", log.read_text()))) < 2:
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.3)
        workers = {int(pid) for pid in re.findall(r"app ready in pid (\d+)", log.read_text())}

        body, headers = multipart(
            {"name": "fresh", "file": ("m.zip", export_zip("tflite_quantized"), "application/zip")}
        )
        status, row = call(f"{base}/api/classifier/models", body, headers=headers)
        assert status == 201, row
        for _ in range(5):  # until both workers have answered (each answer must be 200)
            assert set(classify_many(base)) == {200}
            if served_by(log, "POST", "/api/classifier/fresh").keys() == workers:
                break
        assert served_by(log, "POST", "/api/classifier/fresh") == {pid: {200} for pid in workers}

        assert call(f"{base}/api/classifier/models/fresh", method="DELETE")[0] == 204
        before = log.read_text()
        for _ in range(5):
            assert set(classify_many(base)) == {404}
            lines = ACCESS.findall(log.read_text()[len(before) :])
            after = {int(p) for p, *call_ in lines if call_ == ["POST", "/api/classifier/fresh", "404"]}
            if after == workers:
                break
        assert after == workers, "a worker never answered after the removal"
        assert [p.name for p in (tmp_path / "classifiers").iterdir()] == [".generation"]
    finally:
        stop(process)
