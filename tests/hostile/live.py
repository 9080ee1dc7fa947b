"""A real gunicorn (gunicorn.conf.py, one worker) on a loopback port, and a raw HTTP/1.1 client for it.

What gunicorn itself does with a request (chunked bodies, pipelining, request-line limits) can
only be seen on a socket: the Flask test client never parses HTTP.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
START_SECONDS = 120


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """A running gunicorn: where it listens and its log."""

    port: int
    log: Path
    folder: Path
    pid: int = 0  # the gunicorn master

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@contextmanager
def gunicorn(folder: Path, workers: int = 1, **settings: str) -> Iterator[Server]:
    """Run gunicorn -c gunicorn.conf.py with only the digits model and its own store in `folder`."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VISION_")}
    env.update(
        {
            "GUNICORN_BIND": f"127.0.0.1:{port}",
            "GUNICORN_WORKERS": str(workers),
            "GUNICORN_THREADS": "2",
            "PROMETHEUS_MULTIPROC_DIR": str(folder / "metrics"),
            "DATABASE_URL": f"sqlite:///{folder / 'images.db'}",
            "VISION_IMAGE_DIR": str(folder / "images"),
            "VISION_SAVE_IMAGES": "false",
            "VISION_LOG_LEVEL": "WARNING",
            "VISION_MODELS": json.dumps({"numbers": {"type": "numbers", "path": "models/numbers.onnx"}}),
            "VISION_CLASSIFIER_DIRS": "[]",
            "VISION_DEFAULT_CLASSIFIER": "numbers",
            **{f"VISION_{k}": v for k, v in settings.items()},
        }
    )
    log = folder / "gunicorn.log"
    gunicorn_bin = Path(sys.executable).parent / "gunicorn"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(gunicorn_bin), "-c", "gunicorn.conf.py", "app:create_app()"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(port, log, folder, proc.pid)
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not start (exit {proc.poll()}):\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(server.url("/health"), timeout=2):
                    break
            except OSError:
                time.sleep(0.1)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Answer:
    """One HTTP response read off the socket."""

    status: int
    headers: dict[str, str]
    body: bytes = field(repr=False)

    def json(self) -> dict:
        return json.loads(self.body)


def exchange(server: Server, raw: bytes, seconds: float = 15) -> tuple[list[Answer], bool]:
    """Send raw bytes (sent from a thread, as the server may stop reading), read every answer.

    Returns the answers in order and whether the server closed the connection (rather than the
    read timing out).
    """
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=seconds)

    def send():
        # The server may answer and close before reading everything: that is one of the outcomes.
        with contextlib.suppress(OSError):
            sock.sendall(raw)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    received = bytearray()
    closed = False
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            received += chunk
    finally:
        sock.close()
        sender.join(timeout=5)
    return parse_answers(bytes(received)), closed


def parse_answers(data: bytes) -> list[Answer]:
    """Split a byte stream into HTTP/1.1 responses (Content-Length or chunked bodies)."""
    answers = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            raise AssertionError(f"a partial response: {data[:200]!r}")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            length = int(headers["content-length"])
            body, data = rest[:length], rest[length:]
        elif headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    _, _, rest = rest.partition(b"\r\n")
                    break
                body += rest[:size]
                rest = rest[size + 2 :]
            data = rest
        else:
            body, data = rest, b""
        answers.append(Answer(status, headers, body))
    return answers


def chunked(body: bytes, size: int = 65536) -> bytes:
    """Encode a body with Transfer-Encoding: chunked framing."""
    out = bytearray()
    for start in range(0, len(body), size):
        piece = body[start : start + size]
        out += f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    return bytes(out + b"0\r\n\r\n")
