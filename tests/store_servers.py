"""Real servers for the image store's tests: redis-server, a throwaway PostgreSQL cluster, a Celery
worker. Each listens on a free loopback port and is stopped by its fixture; a server that cannot
run here makes the tests that need it skip, with the reason printed."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """Return a loopback TCP port that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen | None = None) -> bool:
    """Wait until something accepts connections on a loopback port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.05)
    return False


def skip_reason(reason: str) -> str:
    """Print why a server cannot run (so CI logs show it) and return the reason for pytest.skip."""
    print(f"\nSKIP: {reason}", file=sys.stderr)
    return reason


@dataclass
class Server:
    """A running server process and how to reach it."""

    url: str
    port: int
    proc: subprocess.Popen | None
    workdir: Path
    log: Path
    stop_cmd: list[str] = field(default_factory=list)

    def stop(self) -> None:
        """Stop the server (by its own command when it has one) and wait for it."""
        if self.stop_cmd:
            subprocess.run(self.stop_cmd, capture_output=True, timeout=30, check=False)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def start_redis(workdir: Path, port: int | None = None) -> Server | str:
    """Start redis-server on loopback; return the Server, or why it cannot run."""
    binary = shutil.which("redis-server")
    if binary is None:
        return skip_reason("redis-server is not installed (Debian package redis-server)")
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"redis-{port}.log"
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    args += ["--dir", str(workdir), "--logfile", str(log), "--protected-mode", "yes"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    if not wait_for_port(port, 15, proc):
        proc.kill()
        text = log.read_text(errors="replace")[-500:] if log.exists() else ""
        return skip_reason(f"redis-server did not start on port {port}: {text}")
    return Server(url=f"redis://127.0.0.1:{port}/0", port=port, proc=proc, workdir=workdir, log=log)


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def start_postgres() -> Server | str:
    """Create and start a throwaway PostgreSQL cluster on loopback; return it, or why it cannot run."""
    try:
        import psycopg  # noqa: F401 - the driver SQLAlchemy uses for postgresql+psycopg
    except ImportError:
        return skip_reason("psycopg is not installed (pip install 'psycopg[binary]')")
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        return skip_reason(
            "PostgreSQL server binaries (initdb, pg_ctl) are not installed (Debian postgresql)"
        )
    run_as: list[str] = []
    owner = None
    if os.geteuid() == 0:
        # initdb refuses to run as root: run the cluster as the postgres (or nobody) account.
        for name in ("postgres", "nobody"):
            try:
                owner = pwd.getpwnam(name)
                break
            except KeyError:
                continue
        if owner is None or not shutil.which("runuser"):
            return skip_reason("running as root without a postgres account or runuser to start PostgreSQL")
        run_as = ["runuser", "-u", owner.pw_name, "--"]
    # Not under pytest's tmp dir: that is private to root, and the server runs as another user.
    workdir = Path(tempfile.mkdtemp(prefix="vision-pg-"))
    data = workdir / "data"
    log = workdir / "server.log"
    if owner is not None:
        os.chown(workdir, owner.pw_uid, owner.pw_gid)
    port = free_port()
    init = subprocess.run(
        [*run_as, initdb, "-D", str(data), "-U", "vision", "--auth=trust", "-E", "UTF8", "--no-sync"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if init.returncode != 0:
        shutil.rmtree(workdir, ignore_errors=True)
        return skip_reason(f"initdb failed: {init.stderr.strip()[-400:]}")
    options = f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50"
    start = subprocess.run(
        [*run_as, pg_ctl, "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start"],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    if start.returncode != 0:
        text = log.read_text(errors="replace")[-400:] if log.exists() else start.stderr
        shutil.rmtree(workdir, ignore_errors=True)
        return skip_reason(f"PostgreSQL did not start: {text}")
    stop = [*run_as, pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"]
    url = f"postgresql+psycopg://vision@127.0.0.1:{port}/postgres"
    return Server(url=url, port=port, proc=None, workdir=workdir, log=log, stop_cmd=stop)


def start_celery_worker(env: dict[str, str], log: Path, timeout: float = 90) -> subprocess.Popen | str:
    """Start `celery -A store.celery_app worker` from the project root; return it once it is ready."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VISION_")}
    clean.pop("DATABASE_URL", None)
    clean.pop("CELERY_BROKER_URL", None)
    clean.pop("PROMETHEUS_MULTIPROC_DIR", None)
    clean.update(env)
    # The documented command: the `celery` script next to this Python, run from the project root.
    script = Path(sys.executable).parent / "celery"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "celery"]
    args = [*command, "-A", "store.celery_app", "worker", "--pool=solo", "--loglevel=INFO"]
    args += ["--without-gossip", "--without-mingle", "--without-heartbeat", "-n", f"thumbs-{os.getpid()}@%h"]
    handle = open(log, "w")  # noqa: SIM115 - the worker writes to it for its whole life
    proc = subprocess.Popen(args, cwd=ROOT, env=clean, stdout=handle, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return skip_reason(f"the celery worker exited: {log.read_text(errors='replace')[-800:]}")
        if " ready." in log.read_text(errors="replace"):
            return proc
        time.sleep(0.2)
    proc.kill()
    return skip_reason(
        f"the celery worker was not ready in {timeout:.0f} s: {log.read_text(errors='replace')[-800:]}"
    )


def stop_process(proc: subprocess.Popen) -> None:
    """Stop a process this module started, waiting for it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def save_in_process(url: str, folder: str, count: int, seed: int, out) -> None:
    """Save `count` small PNGs from a separate process (a spawn target: imports stay light)."""
    import io

    from PIL import Image

    from store import ImageStore, NewImage

    store = ImageStore(url, folder)
    try:
        ids = []
        for k in range(count):
            buf = io.BytesIO()
            Image.new("L", (5, 5), (seed * 31 + k) % 256).save(buf, format="PNG")
            ids.append(store.save(NewImage(buf.getvalue(), "PNG", 5, 5, endpoint=f"process-{seed}")))
        out.put(ids)
    except BaseException as exc:  # report, do not hang the parent
        out.put(repr(exc))
    finally:
        store.close()
