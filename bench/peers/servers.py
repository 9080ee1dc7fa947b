"""The peers' virtual environments and servers: install them, start them on loopback, measure their processes.

Each peer lives in bench/peers/.venv-<peer> (git-ignored), made from the interpreter running the
bench, with this project installed without extras (`pip install -e .`) and the peer's exact pins
(bench/peers/<peer>.txt). A stamp file holds the hash of both files: a change reinstalls.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import psutil

from bench import venvs
from bench.payloads import ROOT
from bench.server import GunicornServer, free_port, http

HERE = Path(__file__).resolve().parent
READY = re.compile(r"peer models ready in pid (\d+)")


@dataclass(frozen=True)
class Peer:
    """How to run one peer: its command, its readiness path, and its model processes."""

    name: str
    label: str
    ready_path: str
    # Processes that load the models once ready: LitServe runs one set of inference workers per route.
    model_processes_per_worker: int

    @property
    def venv(self) -> Path:
        return HERE / f".venv-{self.name}"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def requirements(self) -> Path:
        return HERE / f"{self.name}.txt"

    def version(self) -> str:
        """The pinned version of the peer itself, from its requirements file."""
        for line in self.requirements.read_text(encoding="utf-8").splitlines():
            if line.lower().startswith(f"{self.name}=="):
                return line.split("==", 1)[1].strip()
        return "unpinned"

    def command(self, port: int, workers: int) -> list[str]:
        """The command line that serves our two drawing routes on 127.0.0.1:port."""
        if self.name == "bentoml":
            return [
                str(self.venv / "bin" / "bentoml"),
                "serve",
                "bench.peers.bento_service:VisionService",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ]
        return [
            str(self.python),
            "-m",
            "bench.peers.litserve_app",
            "--port",
            str(port),
            "--workers",
            str(workers),
        ]


PEERS = {
    "bentoml": Peer("bentoml", "BentoML", "/readyz", 1),
    "litserve": Peer("litserve", "LitServe", "/health", 2),
}


def installed(peer: Peer) -> bool:
    """Say whether the peer's environment is installed from the current pins."""
    return venvs.installed(peer.venv, peer.requirements, (ROOT / "pyproject.toml",))


def ensure_venv(peer: Peer) -> None:
    """Create or update the peer's virtual environment (this project without extras, and the peer)."""
    venvs.ensure(
        peer.venv,
        peer.requirements,
        label=f"{peer.label} {peer.version()}",
        pip_args=("-e", "."),
        also=(ROOT / "pyproject.toml",),
    )


def tree(pid: int) -> list[psutil.Process]:
    """A process and all its descendants that are still alive."""
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def tree_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process, its reaped children and every live descendant."""
    root = psutil.Process(pid)
    times = root.cpu_times()
    total = times.user + times.system + times.children_user + times.children_system
    for process in root.children(recursive=True):
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def tree_rss(pid: int) -> int:
    """RSS in bytes of a process and all its descendants together."""
    total = 0
    for process in tree(pid):
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


def process_cpu(pids) -> dict[int, float]:
    """CPU seconds (user + system) used so far by each of these processes that is alive."""
    out = {}
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.NoSuchProcess:
            continue
        out[pid] = times.user + times.system
    return out


class PeerServer:
    """One peer serving our two drawing routes on 127.0.0.1, started and stopped by us."""

    def __init__(self, peer: Peer, *, workers: int = 2):
        self.peer = peer
        self.name = peer.name
        self.label = f"{peer.label} {peer.version()}"
        self.workers = workers
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.workdir = Path(tempfile.mkdtemp(prefix=f"vision-peer-{peer.name}-"))
        self.log_path = self.workdir / "server.log"
        self.proc: subprocess.Popen | None = None
        self.ready_s: float | None = None

    def environment(self) -> dict[str, str]:
        """The environment without our service's settings, with the peer's state in a scratch folder."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VISION_", "GUNICORN_"))}
        env.pop("VIRTUAL_ENV", None)
        env.update(
            {
                "PEER_WORKERS": str(self.workers),
                "PYTHONUNBUFFERED": "1",
                "BENTOML_HOME": str(self.workdir / "bentoml"),
                "BENTOML_DO_NOT_TRACK": "True",
                "PATH": f"{self.peer.venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
            }
        )
        return env

    def start(self, timeout: float = 120.0) -> None:
        """Start the peer and wait until every model process is warm and its readiness path says 200."""
        log = open(self.log_path, "wb")  # noqa: SIM115 - the peer writes to it for its whole life
        started = time.perf_counter()
        # A session of its own: stopping the group reaches every process the peer forks or spawns.
        self.proc = subprocess.Popen(
            self.peer.command(self.port, self.workers),
            cwd=ROOT,
            env=self.environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        wanted = self.workers * self.peer.model_processes_per_worker
        while time.perf_counter() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                status, _ = http(self.base_url, "GET", self.peer.ready_path, timeout=1.0)
            except OSError:
                status = 0
            if status == 200 and len(self.model_pids()) >= wanted:
                self.ready_s = time.perf_counter() - started
                return
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"{self.label} not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def model_pids(self) -> set[int]:
        """The processes that have loaded and warmed their models."""
        return {int(p) for p in READY.findall(self.log_path.read_text(encoding="utf-8", errors="replace"))}

    def log_tail(self, lines: int = 30) -> str:
        """The end of the peer's log."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def cpu_seconds(self) -> float:
        """CPU time used so far by every process of the peer."""
        return tree_cpu_seconds(self.proc.pid)

    def worker_rss(self) -> dict[int, int]:
        """RSS in bytes of each process that holds a model, by pid."""
        out = {}
        for pid in sorted(self.model_pids()):
            try:
                out[pid] = psutil.Process(pid).memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return out

    def worker_cpu(self) -> dict[int, float]:
        """CPU seconds used so far by each process that holds a model, by pid."""
        return process_cpu(self.model_pids())

    def total_rss(self) -> int:
        """RSS in bytes of every process of the peer together."""
        return tree_rss(self.proc.pid)

    def process_count(self) -> int:
        """How many processes the peer runs."""
        return len(tree(self.proc.pid))

    def stop(self) -> None:
        """Stop the peer's whole process group: TERM, then KILL whatever lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        group = os.getpgid(self.proc.pid)
        os.killpg(group, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=20)
        # Workers a peer leaves behind after its main process exits (LitServe's API servers do).
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.killpg(group, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        os.killpg(group, signal.SIGKILL)
        self.proc.wait(timeout=10)


class OursServer(GunicornServer):
    """Our service as deployed (gunicorn.conf.py), with the same reading methods as a peer."""

    name = "ours"

    def __init__(self, *, workers: int = 2):
        super().__init__(workers=workers, env={"VISION_SAVE_IMAGES": "false"})
        self.label = f"ours (gunicorn {metadata.version('gunicorn')}, Flask {metadata.version('flask')})"
        self.ready_s: float | None = None

    def start(self, timeout: float = 120.0) -> None:
        """Start gunicorn and wait until every worker is warm."""
        super().start(timeout=timeout)
        self.ready_s = self.all_ready_s

    def worker_cpu(self) -> dict[int, float]:
        """CPU seconds used so far by each worker, by pid."""
        return process_cpu(self.worker_pids())

    def total_rss(self) -> int:
        """RSS in bytes of the master and every worker together."""
        return tree_rss(self.proc.pid)

    def process_count(self) -> int:
        """How many processes gunicorn runs."""
        return len(tree(self.proc.pid))
