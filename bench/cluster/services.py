"""The cluster's processes on loopback: PostgreSQL, Redis, two gunicorn nodes, a Celery worker, nginx."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.cluster.proxy import Nginx
from bench.server import GunicornServer, free_port, http
from tests.store_servers import (
    Server,
    start_celery_worker,
    start_postgres,
    start_redis,
    stop_process,
)

log = logging.getLogger("bench.cluster")


class Unavailable(RuntimeError):
    """A program the cluster needs cannot run here; the message says which and why."""


@dataclass(frozen=True)
class Sizes:
    """How big each part is: gunicorn workers and threads per node."""

    workers: int = 1
    threads: int = 4


class Node(GunicornServer):
    """One app node: `gunicorn -c gunicorn.conf.py` on HOST:PORT, with its own Prometheus folder."""

    def __init__(self, name: str, env: dict[str, str], sizes: Sizes):
        port = free_port()
        node_env = {
            # The production path: gunicorn.conf.py binds HOST:PORT from the settings.
            "GUNICORN_BIND": "",
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "GUNICORN_THREADS": str(sizes.threads),
            **env,
        }
        super().__init__(workers=sizes.workers, env=node_env, port=port)
        self.name = name
        self.address = f"127.0.0.1:{port}"
        self.environ = self.environment()

    def restart(self, timeout: float) -> None:
        """Start the node again on the same port and wait until every worker is warm."""
        self.first_ready_s = self.all_ready_s = None
        self.start(timeout)

    def kill(self) -> float:
        """kill -9 the master and every worker at once, as a crashed machine; return when."""
        pids = [self.proc.pid, *self.worker_pids()]
        moment = time.time()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):  # a worker that had just exited
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        # The workers now belong to init; dead is enough (a zombie holds no socket).
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_running(pid) for pid in pids[1:]):
            time.sleep(0.02)
        return moment

    def reload(self, timeout: float) -> tuple[float, float]:
        """HUP gunicorn and wait until only new, warm workers are left; return (sent, done) times."""
        old = set(self.worker_pids())
        sent = time.time()
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            current = set(self.worker_pids())
            if len(current) == self.workers and not current & old and current <= self.ready_pids():
                return sent, time.time()
            time.sleep(0.05)
        raise TimeoutError(f"{self.name}: new workers not warm {timeout:.0f} s after HUP:\n{self.log_tail()}")

    def get(self, path: str, timeout: float = 10) -> tuple[int, bytes]:
        """GET a path straight from this node (not through nginx); return status and raw body."""
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(self.base_url + path, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


class Cluster:
    """Everything on 127.0.0.1, on ports chosen now; `with Cluster(...) as c:` starts and stops it."""

    def __init__(self, sizes: Sizes | None = None, thumbnail_retry_s: int = 5):
        self.sizes = sizes or Sizes()
        self.thumbnail_retry_s = thumbnail_retry_s
        self.workdir = Path(tempfile.mkdtemp(prefix="vision-cluster-"))
        # Shared storage stands in as one folder both nodes and the worker use.
        self.image_dir = self.workdir / "images"
        self.postgres: Server | None = None
        self.redis: Server | None = None
        self.nodes: list[Node] = []
        self.worker: subprocess.Popen | None = None
        self.worker_log = self.workdir / "celery.log"
        self.nginx: Nginx | None = None
        self.timings: dict[str, float] = {}

    def shared_env(self) -> dict[str, str]:
        """The settings every node and the worker share: one database, one broker, one image folder."""
        return {
            "DATABASE_URL": self.postgres.url,
            "CELERY_BROKER_URL": self.redis.url,
            "VISION_IMAGE_DIR": str(self.image_dir),
            "VISION_SAVE_IMAGES": "true",
            # Behind nginx on this host: its X-Forwarded-For counts (from loopback, the default).
            "VISION_TRUSTED_PROXIES": "1",
            # Thumbnails whose task was lost with a killed node are sent again this soon.
            "VISION_THUMBNAIL_RETRY_SECONDS": str(self.thumbnail_retry_s),
            "PYTHONUNBUFFERED": "1",
        }

    def start(self, timeout: float = 180) -> None:
        """Start PostgreSQL and Redis, then the nodes and the worker together, then nginx."""
        began = time.perf_counter()
        log.info("starting PostgreSQL and Redis in %s", self.workdir)
        postgres = start_postgres()
        if isinstance(postgres, str):
            raise Unavailable(postgres)
        self.postgres = postgres
        redis = start_redis(self.workdir / "redis", free_port())
        if isinstance(redis, str):
            raise Unavailable(redis)
        self.redis = redis
        self.timings["databases_s"] = time.perf_counter() - began
        self.image_dir.mkdir()
        env = self.shared_env()
        self.nodes = [Node(name, env, self.sizes) for name in ("A", "B")]
        log.info(
            "starting nodes %s and the Celery worker (%.1f s)",
            ", ".join(f"{n.name} on {n.address}" for n in self.nodes),
            self.timings["databases_s"],
        )
        with ThreadPoolExecutor(3) as pool:
            worker = pool.submit(self.start_worker, timeout)
            for future in [pool.submit(node.start, timeout) for node in self.nodes]:
                future.result()
            worker.result()
        self.timings["nodes_s"] = time.perf_counter() - began
        self.nginx = Nginx(self.workdir / "nginx", free_port(), [n.address for n in self.nodes])
        self.nginx.start()
        log.info("nginx on %s (%.1f s)", self.nginx.url, time.perf_counter() - began)
        status, _ = http(self.nginx.url, "GET", "/ready")
        if status != 200:
            raise RuntimeError(f"/ready through nginx answered {status}: {self.nginx.error_tail()}")
        self.timings["started_s"] = time.perf_counter() - began

    def pids(self) -> list[int]:
        """Every process of the cluster now: servers, nodes and their workers, the Celery worker."""
        roots = [n.proc.pid for n in self.nodes if n.proc is not None]
        roots += [p.pid for p in (self.worker, self.redis.proc if self.redis else None) if p is not None]
        if self.nginx is not None and self.nginx.proc is not None:
            roots.append(self.nginx.proc.pid)
        if self.postgres is not None:  # started by pg_ctl: its pid is in the data folder
            roots.append(int((self.postgres.workdir / "data" / "postmaster.pid").read_text().split()[0]))
        pids = []
        for pid in roots:
            process = _process(pid)
            if process is not None:
                pids += [pid, *(child.pid for child in process.children(recursive=True))]
        return pids

    def listening(self) -> set[str]:
        """The addresses the cluster's processes listen on (host:port)."""
        found = set()
        for pid in self.pids():
            process = _process(pid)
            try:
                connections = process.net_connections(kind="inet") if process else []
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            found |= {f"{c.laddr.ip}:{c.laddr.port}" for c in connections if c.status == psutil.CONN_LISTEN}
        return found

    def start_worker(self, timeout: float = 90) -> None:
        """Start the Celery thumbnail worker and wait until it is ready."""
        worker = start_celery_worker(self.shared_env(), self.worker_log, timeout)
        if isinstance(worker, str):
            raise RuntimeError(worker)
        self.worker = worker

    def stop_worker(self) -> None:
        """Stop the Celery worker gracefully (TERM: it finishes its task, the queue stays in Redis)."""
        if self.worker is not None:
            stop_process(self.worker)
            self.worker = None

    def stop(self) -> None:
        """Stop everything this cluster started, nginx first, and remove its files."""
        if self.nginx is not None:
            self.nginx.stop()
        for node in self.nodes:
            node.stop()
            shutil.rmtree(node.workdir, ignore_errors=True)
        self.stop_worker()
        for server in (self.redis, self.postgres):
            if server is not None:
                server.stop()
                shutil.rmtree(server.workdir, ignore_errors=True)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Cluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
