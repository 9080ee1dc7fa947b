"""Malformed JSON and parameters: every route that reads JSON answers 400 in the error shape, fast.

Deep nesting is refused before parsing, non-finite numbers (NaN, Infinity, 1e400) are not JSON
numbers anywhere, a legacy nested array's shape is checked before an array is built from it, and
query parameters that are not what the document says are 400, never 500.
"""

from __future__ import annotations

import base64
import time
import tracemalloc

import pytest

from tests.hostile import bombs, routes

# CPU seconds of the thread that serves the request (the test client runs it on this one), so a
# loaded machine does not count: what is bounded is what a hostile body costs a worker.
FAST_SECONDS = 1.0
# What one hostile body may cost in Python allocations (the body itself is a few MB).
MEMORY_BYTES = 64 * 1024 * 1024
WIDE = 2_000_000


def hostile_bodies() -> dict[str, bytes]:
    """JSON bodies (or near-JSON: Python's parser takes NaN and Infinity) that must be answered 400."""
    image = base64.b64encode(bombs.small_png())
    deep = 100_000
    wide = b"[[" + b",".join([b"0"] * WIDE) + b"]]"
    return {
        "100,000 nested brackets": b"[" * deep + b"]" * deep,
        "nested brackets as the image": b'{"image": ' + b"[" * deep + b"]" * deep + b"}",
        "nested brackets as the image's text": b'{"image": "' + b"[" * deep + b"]" * deep + b'"}',
        "nested objects beside the image": b'{"image": "'
        + image
        + b'", "top": '
        + b'{"a":' * deep
        + b"1"
        + b"}" * deep
        + b"}",
        "1e400 in the options": b'{"image": "'
        + image
        + b'", "top": 1e400, "detect": 1e400, "format": 1e400, '
        b'"model": 1e400, "label": 1e400}',
        "NaN in the options": b'{"image": "' + image + b'", "top": NaN, "detect": NaN, "label": NaN}',
        "-Infinity in the options": b'{"image": "' + image + b'", "top": -Infinity, "label": -Infinity}',
        "a 5000-digit number": b'{"image": "'
        + image
        + b'", "top": '
        + b"9" * 5000
        + b', "label": '
        + b"9" * 5000
        + b"}",
        "legacy array 2,000,000 wide": b'{"image": ' + wide + b"}",
        "legacy array 2,000,000 wide as text": b'{"image": "' + wide + b'"}',
        "NaN in a legacy array": b'{"image": [[0, NaN, 0], [0, 0, 0], [0, 0, 0]]}',
        "Infinity in a legacy array as text": b'{"image": "[[0, Infinity], [0, 0]]"}',
        "1e400 in a legacy array": b'{"image": [[0, 1e400], [0, 0]]}',
    }


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    with routes.hostile_app(tmp_path_factory.mktemp("json")) as app:
        yield app


@pytest.fixture(scope="module")
def client(app):
    return app.test_client()


@pytest.fixture(scope="module")
def image_id(client):
    return routes.upload(client)


def test_every_json_route_answers_malformed_json_with_400(app, client, image_id):
    targets = routes.json_routes(app, image_id)
    assert len(targets) >= 6, targets
    wrong = []
    for name, body in hostile_bodies().items():
        for route in targets:
            started = time.thread_time()
            response = client.open(
                route.path, method=route.method, data=body, content_type="application/json"
            )
            elapsed = time.thread_time() - started
            answer = response.get_json(silent=True) or {}
            shaped = isinstance(answer.get("error"), str) and isinstance(answer.get("code"), str)
            if response.status_code != 400 or not shaped or elapsed > FAST_SECONDS:
                wrong.append(f"{route} {name}: {response.status_code} {answer.get('code')} in {elapsed:.2f}s")
    assert not wrong, "\n".join(wrong)
    assert routes.stored_count(app) == 1  # only the image the test itself uploaded


@pytest.mark.slow  # tracemalloc follows each of the 2,000,000 numbers parsed: seconds, where the request takes 0.1 s
def test_the_largest_hostile_bodies_cost_little_memory(app, client):
    """The nested and wide bodies are refused from their shape: no array is built from them."""
    bodies = hostile_bodies()
    wrong = []
    for name in ("100,000 nested brackets", "legacy array 2,000,000 wide"):
        tracemalloc.start()
        response = client.post("/api/predict", data=bodies[name], content_type="application/json")
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        if response.status_code != 400 or peak > MEMORY_BYTES:
            wrong.append(f"{name}: {response.status_code}, {peak / 2**20:.0f} MB")
    assert not wrong, "\n".join(wrong)


HOSTILE_VALUES = {
    "5000 digits": "9" * 5000,
    "1e400": "1e400",
    "NaN": "NaN",
    "-Infinity": "-Infinity",
    "NUL": "\x00",
    "4000 letters": "a" * 4000,
}


def documented_query_parameters(spec: dict) -> list[tuple[str, str, dict]]:
    """Return (method, path, parameter) for every query parameter the document lists."""
    shared = spec.get("components", {}).get("parameters", {})
    found = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if not isinstance(operation, dict):
                continue
            for parameter in operation.get("parameters", []):
                if "$ref" in parameter:
                    parameter = shared[parameter["$ref"].rsplit("/", 1)[-1]]
                if parameter.get("in") == "query":
                    found.append((method.upper(), path, parameter))
    return found


def test_every_documented_query_parameter_answers_hostile_values_in_json(app, client, image_id):
    spec = client.get("/openapi.json").get_json()
    parameters = documented_query_parameters(spec)
    assert len(parameters) >= 10, parameters
    wrong = []
    for method, path, parameter in parameters:
        url = path.replace("{image_id}", image_id).replace("{name}", app.config["DEFAULT_CLASSIFIER"])
        for label, value in HOSTILE_VALUES.items():
            kwargs = {"data": bombs.small_png(), "content_type": "image/png"} if method == "POST" else {}
            response = client.open(url, method=method, query_string={parameter["name"]: value}, **kwargs)
            answer = response.get_json(silent=True) or {}
            numeric = parameter.get("schema", {}).get("type") == "integer"
            refused_in_json = response.status_code < 400 or response.is_json
            if (
                response.status_code >= 500
                or not refused_in_json
                or (numeric and response.status_code != 400)
            ):
                wrong.append(
                    f"{method} {path} ?{parameter['name']}={label}: {response.status_code} {answer.get('code')}"
                )
    assert not wrong, "\n".join(wrong)
