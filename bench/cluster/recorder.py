"""A second locustfile beside locust.py: it adds no users, it writes every request down.

    locust -f locust.py,bench/cluster/recorder.py ...   (CLUSTER_REQUEST_LOG names the JSON-lines file)

Each line is one request: name, start (epoch seconds), duration, status, whether locust.py's check
passed, and for an upload the id the server answered. The calibration requests locust.py sends
before the clock starts are written too (their images are kept like any other), and a line marks
the start and the end of the load.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import bench.server
from locust import events

_out = open(os.environ["CLUSTER_REQUEST_LOG"], "a", buffering=1, encoding="utf-8")  # noqa: SIM115


def write(**fields: Any) -> None:
    """Append one JSON line."""
    _out.write(json.dumps(fields, separators=(",", ":")) + "\n")


def _upload_id(status: int, body: Any) -> str | None:
    if status == 201 and isinstance(body, dict) and isinstance(body.get("id"), str):
        return body["id"]
    return None


_send = bench.server.send


def _recorded_send(base_url: str, payload: Any, timeout: float = 10.0) -> tuple[int, Any]:
    """Send a calibration payload (locust.py's calibrate) and write it down."""
    start = time.time()
    try:
        status, body = _send(base_url, payload, timeout)
    except OSError as exc:
        write(kind="calibration", name=payload.path, start=start, ms=0, status=0, ok=False, error=str(exc))
        raise
    ms = (time.time() - start) * 1000
    problem = payload.verdict(status, body)
    write(
        kind="calibration",
        name=payload.path,  # the route: payloads.build() also has variants (the page's digits)
        start=start,
        ms=ms,
        status=status,
        ok=problem is None,
        id=_upload_id(status, body),
    )
    return status, body


# locust.py's calibrate() sends through bench.server.select_known, which looks `send` up at call time.
bench.server.send = _recorded_send


@events.test_start.add_listener
def on_start(**_kwargs: Any) -> None:
    """Mark the moment the load starts."""
    write(kind="start", t=time.time())


@events.test_stop.add_listener
def on_stop(**_kwargs: Any) -> None:
    """Mark the moment the load stops."""
    write(kind="stop", t=time.time())


@events.request.add_listener
def on_request(
    request_type: str,
    name: str,
    response_time: float,
    response: Any = None,
    exception: BaseException | None = None,
    start_time: float | None = None,
    **_kwargs: Any,
) -> None:
    """Write one request down, with the id of an upload."""
    status = getattr(response, "status_code", 0) or 0
    upload = None
    if status == 201:
        try:
            upload = _upload_id(status, response.json())
        except ValueError:
            upload = None
    write(
        kind="request",
        name=name,
        method=request_type,
        start=start_time if start_time is not None else time.time() - response_time / 1000,
        ms=response_time,
        status=status,
        ok=exception is None,
        id=upload,
        error=None if exception is None else str(exception)[:300],
    )
