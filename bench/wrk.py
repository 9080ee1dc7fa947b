"""Drive one endpoint with wrk: a Lua script sends the payloads' exact bytes and prints its figures."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from bench.payloads import Payload

MARKER = "BENCH_JSON "

# The payload bodies are files the script reads once per wrk thread; each request cycles through them.
LUA = r"""
local specs = __SPECS__
local requests = {}
local n = 0

init = function(args)
  for i, spec in ipairs(specs) do
    local body = nil
    if spec.file then
      local f = assert(io.open(spec.file, "rb"))
      body = f:read("*a")
      f:close()
    end
    local headers = {}
    if spec.ctype then headers["Content-Type"] = spec.ctype end
    requests[i] = wrk.format(spec.method, spec.path, headers, body)
  end
end

request = function()
  n = n % #requests + 1
  return requests[n]
end

done = function(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    '__MARKER__{"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, '
    .. '"status": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
"""


def lua_string(value: str) -> str:
    """Quote a string for Lua."""
    return json.dumps(value)  # JSON string escapes are valid Lua for the ASCII paths used here


def write_script(payloads: list[Payload], folder: Path, name: str) -> Path:
    """Write the payload bodies and a wrk Lua script that cycles through them; return the script."""
    folder.mkdir(parents=True, exist_ok=True)
    specs = []
    for i, payload in enumerate(payloads):
        entry = [f"method = {lua_string(payload.method)}", f"path = {lua_string(payload.path)}"]
        if payload.body is not None:
            body_file = folder / f"{name}-{i}.body"
            body_file.write_bytes(payload.body)
            entry.append(f"file = {lua_string(str(body_file))}")
        if payload.content_type:
            entry.append(f"ctype = {lua_string(payload.content_type)}")
        specs.append("{" + ", ".join(entry) + "}")
    script = folder / f"{name}.lua"
    script.write_text(
        LUA.replace("__SPECS__", "{\n  " + ",\n  ".join(specs) + "\n}").replace("__MARKER__", MARKER),
        encoding="utf-8",
    )
    return script


def wrk_binary() -> str:
    """Return the wrk executable, or say how to install it."""
    path = shutil.which("wrk")
    if not path:
        raise FileNotFoundError(
            "wrk is not installed: apt-get install wrk (Debian/Ubuntu), brew install wrk (macOS)"
        )
    return path


def run(base_url: str, script: Path, *, connections: int, seconds: float, timeout_s: float = 10.0) -> dict:
    """Run wrk with one thread and `connections` clients for `seconds`; return its figures."""
    command = [
        wrk_binary(),
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        f"--timeout={timeout_s:g}s",
        "-s",
        str(script),
        base_url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + timeout_s + 30)
    for line in done.stdout.splitlines():
        if line.startswith(MARKER):
            raw = json.loads(line[len(MARKER) :])
            break
    else:
        raise RuntimeError(f"wrk printed no figures (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")
    seconds_run = raw["duration_us"] / 1e6
    errors = raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]
    return {
        "clients": connections,
        "requests": raw["requests"],
        "seconds": round(seconds_run, 3),
        "rps": round(raw["requests"] / seconds_run, 1) if seconds_run else 0.0,
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "mean_ms": round(raw["mean_us"] / 1000, 3),
        "non_2xx": raw["status"],
        "socket_errors": errors,
    }
