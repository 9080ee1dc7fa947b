"""nginx in front of the nodes: the example site with its addresses and ports changed, and its log read back."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.payloads import ROOT
from tests.store_servers import wait_for_port

SITE = ROOT / "deploy" / "nginx" / "vision.conf"

# One JSON line per request: when it ended ($msec), how long it took, and every node nginx tried
# for it with that node's answer ("502" for a connection refused), in order.
LOG_FORMAT = (
    'log_format cluster escape=json \'{"end":$msec,"took":$request_time,"status":$status,'
    '"method":"$request_method","uri":"$uri","nodes":"$upstream_addr","answers":"$upstream_status"}\';'
)

SERVER_LINE = re.compile(r"^(\s*server\s+)([\d.]+:\d+)", re.M)
LISTEN_LINE = re.compile(r"^(\s*listen\s+)[^;]+;", re.M)
FAIL_TIMEOUT = re.compile(r"fail_timeout=(\d+)s")


def nginx_binary() -> str | None:
    """Find nginx on PATH or where Debian installs it."""
    return shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)


def render_site(template: str, nodes: list[str], listen: str) -> str:
    """Point the example site at these nodes and this address; nothing else changes."""
    matches = list(SERVER_LINE.finditer(template))
    if len(matches) < len(nodes):
        raise ValueError(f"{SITE} lists {len(matches)} upstream servers, the cluster has {len(nodes)} nodes")
    pieces, last = [], 0
    for k, match in enumerate(matches):
        pieces.append(template[last : match.start()])
        end_of_line = template.index("\n", match.start()) + 1
        if k < len(nodes):  # the same parameters (max_fails, fail_timeout), another address
            pieces.append(match.group(1) + nodes[k] + template[match.end() : end_of_line])
        last = end_of_line  # extra example servers are left out
    pieces.append(template[last:])
    site, count = LISTEN_LINE.subn(rf"\g<1>{listen};", "".join(pieces))
    if count != 1:
        raise ValueError(f"{SITE} must have one listen line, found {count}")
    return site


def fail_timeout(site: str) -> float:
    """The passive health check's fail_timeout (seconds) of the first upstream server."""
    found = FAIL_TIMEOUT.search(site)
    return float(found.group(1)) if found else 10.0  # nginx's default


@dataclass
class Attempt:
    """One request as nginx logged it: when it started and ended, and each node it tried."""

    start: float
    end: float
    status: int
    method: str
    uri: str
    tries: list[tuple[str, str]]  # (node address, its answer) in the order nginx tried them

    def tried(self, node: str) -> str | None:
        """The answer `node` gave to this request, or None when nginx did not try it."""
        return next((answer for address, answer in self.tries if address == node), None)

    @property
    def answered_by(self) -> str | None:
        """The node whose answer the client got (the last one tried), None when none was tried."""
        return self.tries[-1][0] if self.tries else None


def parse_log(path: Path) -> list[Attempt]:
    """Read the access log written with LOG_FORMAT (a line being written is skipped)."""
    attempts = []
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        nodes = [n.strip() for n in entry["nodes"].split(",") if n.strip()]
        answers = [a.strip() for a in entry["answers"].split(",") if a.strip()]
        end = float(entry["end"])
        attempts.append(
            Attempt(
                start=end - float(entry["took"]),
                end=end,
                status=int(entry["status"]),
                method=entry["method"],
                uri=entry["uri"],
                tries=list(zip(nodes, answers + ["-"] * (len(nodes) - len(answers)), strict=True)),
            )
        )
    return attempts


class Nginx:
    """nginx on a loopback port with the example site, its files in one folder of this run."""

    def __init__(self, workdir: Path, port: int, nodes: list[str]):
        self.workdir = workdir
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.access_log = workdir / "access.log"
        self.error_log = workdir / "error.log"
        self.site = render_site(SITE.read_text(encoding="utf-8"), nodes, f"127.0.0.1:{port}")
        self.fail_timeout = fail_timeout(self.site)
        self.proc: subprocess.Popen | None = None

    def write_config(self) -> Path:
        """Write nginx.conf (the http block around the site) and the site into the work folder."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "vision.conf").write_text(self.site, encoding="utf-8")
        temp = {name: self.workdir / name for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")}
        # As root, nginx's workers would run as nobody, who cannot enter this run's private folders.
        user = "user root;\n" if os.geteuid() == 0 else ""
        conf = self.workdir / "nginx.conf"
        conf.write_text(
            f"# Written for one run of bench.cluster: the site is {SITE.relative_to(ROOT)} with only its\n"
            "# addresses and ports changed.\n"
            f"{user}worker_processes 2;\ndaemon off;\npid {self.workdir / 'nginx.pid'};\n"
            f"error_log {self.error_log} warn;\n"
            "events { worker_connections 1024; }\n"
            "http {\n"
            f"    {LOG_FORMAT}\n"
            f"    access_log {self.access_log} cluster;\n"
            + "".join(f"    {name}_temp_path {path};\n" for name, path in temp.items())
            + f"    include {self.workdir / 'vision.conf'};\n}}\n",
            encoding="utf-8",
        )
        return conf

    def start(self, timeout: float = 30) -> None:
        """Start nginx in the foreground and wait until it listens."""
        binary = nginx_binary()
        if binary is None:
            raise RuntimeError("nginx is not installed (Debian nginx-light: make system-deps)")
        conf = self.write_config()
        args = [binary, "-c", str(conf), "-p", str(self.workdir), "-e", str(self.error_log)]
        check = subprocess.run([*args, "-t"], capture_output=True, text=True, timeout=60)
        if check.returncode != 0:
            raise RuntimeError(f"nginx -t refused the configuration: {check.stderr.strip()}")
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not wait_for_port(self.port, timeout, self.proc):
            raise RuntimeError(f"nginx did not listen on {self.port}: {self.error_tail()}")

    def attempts(self) -> list[Attempt]:
        """Every request nginx has logged so far."""
        return parse_log(self.access_log)

    def error_tail(self, lines: int = 20) -> str:
        """The end of nginx's error log."""
        try:
            return "\n".join(self.error_log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop nginx gracefully (QUIT lets answers in flight finish), then for good."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGQUIT)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
