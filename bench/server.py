"""Start gunicorn with the production config on a loopback port, time it to /ready, measure its workers."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil

from bench.payloads import ROOT, Payload

READY_LINE = re.compile(r"app ready in pid (\d+)")


def free_port() -> int:
    """Return a TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http(
    base_url: str,
    method: str,
    path: str,
    body: bytes | None = None,
    content_type: str | None = None,
    timeout: float = 10.0,
) -> tuple[int, Any]:
    """Send one request and return the status and the decoded JSON body (None when not JSON)."""
    headers = {"Content-Type": content_type} if content_type else {}
    request = urllib.request.Request(base_url + path, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, None


def send(base_url: str, payload: Payload, timeout: float = 10.0) -> tuple[int, Any]:
    """Send one payload."""
    return http(base_url, payload.method, payload.path, payload.body, payload.content_type, timeout)


def select_known(base_url: str, payloads: list[Payload]) -> tuple[list[Payload], list[str]]:
    """Keep the payloads the server answers right at rest; return them and what was wrong with the rest."""
    kept, problems = [], []
    for payload in payloads:
        try:
            status, body = send(base_url, payload)
        except OSError as exc:
            problems.append(f"{payload.note or payload.path}: {exc}")
            continue
        problem = payload.verdict(status, body)
        if problem:
            problems.append(f"{payload.note or payload.path}: {problem}")
        else:
            kept.append(payload)
    return kept, problems


class GunicornServer:
    """gunicorn -c gunicorn.conf.py "app:create_app()" on 127.0.0.1, started and stopped by us."""

    def __init__(
        self,
        *,
        workers: int = 2,
        env: dict[str, str] | None = None,
        port: int | None = None,
        require_ready: bool = True,
    ):
        self.workers = workers
        self.require_ready = require_ready
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.workdir = Path(tempfile.mkdtemp(prefix="vision-bench-"))
        self.log_path = self.workdir / "gunicorn.log"
        self.extra_env = env or {}
        self.proc: subprocess.Popen | None = None
        self.started = 0.0
        self.first_ready_s: float | None = None
        self.all_ready_s: float | None = None

    def environment(self) -> dict[str, str]:
        """The production settings, bound to loopback, with the image store in a scratch folder."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("VISION_", "GUNICORN_"))
            and k not in ("DATABASE_URL", "CELERY_BROKER_URL", "PORT")
        }
        env.update(
            {
                "GUNICORN_BIND": f"127.0.0.1:{self.port}",
                "GUNICORN_WORKERS": str(self.workers),
                "PROMETHEUS_MULTIPROC_DIR": str(self.workdir / "metrics"),
                "VISION_IMAGE_DIR": str(self.workdir / "images"),
                "DATABASE_URL": f"sqlite:///{self.workdir / 'images.db'}",
                "PYTHONUNBUFFERED": "1",
                # gunicorn's control socket: our own, not the ~/.gunicorn one other instances use.
                "XDG_RUNTIME_DIR": str(self.workdir),
            }
        )
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 60.0) -> None:
        """Start gunicorn and wait until every worker has loaded its models and /ready says 200."""
        log = open(self.log_path, "wb")  # noqa: SIM115 - gunicorn writes to it for its whole life
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app:create_app()"],
            cwd=ROOT,
            env=self.environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = self.started + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}:\n{self.log_tail()}")
            if self.first_ready_s is None:
                try:
                    status, _ = http(self.base_url, "GET", "/ready", timeout=1.0)
                except OSError:
                    status = 0
                if status == 200 or (status == 503 and not self.require_ready):
                    self.first_ready_s = time.perf_counter() - self.started
                elif status == 503:
                    self.stop()
                    raise RuntimeError(f"/ready says 503: a model failed to load:\n{self.log_tail()}")
            if self.first_ready_s is not None and len(self.ready_pids()) >= self.workers:
                self.all_ready_s = time.perf_counter() - self.started
                return
            time.sleep(0.01)
        self.stop()
        raise TimeoutError(f"gunicorn not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def ready_pids(self) -> set[int]:
        """The workers that have logged 'app ready' (models loaded and warmed)."""
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return {int(pid) for pid in READY_LINE.findall(text)}

    def log_tail(self, lines: int = 30) -> str:
        """The end of gunicorn's log."""
        try:
            return "\n".join(
                self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
            )
        except OSError:
            return ""

    def worker_rss(self) -> dict[int, int]:
        """RSS in bytes of each worker process, by pid."""
        master = psutil.Process(self.proc.pid)
        return {child.pid: child.memory_info().rss for child in master.children()}

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by gunicorn: the master and every worker.

        Workers that gunicorn recycled (max_requests) and reaped still count, through the master's
        children times; without them a restart in the middle of a point makes its CPU negative.
        """
        master = psutil.Process(self.proc.pid)
        times = master.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        for process in master.children():
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:  # reaped between the listing and now: counted above next time
                continue
            total += times.user + times.system
        return total

    def worker_pids(self) -> list[int]:
        """The worker pids."""
        return [child.pid for child in psutil.Process(self.proc.pid).children()]

    def stop(self) -> None:
        """Stop gunicorn gracefully (TERM), then for good (KILL) if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def __enter__(self) -> GunicornServer:
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
