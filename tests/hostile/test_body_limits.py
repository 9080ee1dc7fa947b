"""Request bodies: one limit for every route, whatever the framing, and one rule that sizes it.

A body over MAX_CONTENT_LENGTH is 413 with nothing stored, on every route, with a Content-Length
or chunked; under gunicorn the connection stays in step (a pipelined request is answered, or the
connection is closed after the 413). MAX_CONTENT_LENGTH is derived from MAX_IMAGE_BYTES so that an
image of MAX_IMAGE_BYTES passes in every encoding and one byte more is 413 in every encoding.
"""

from __future__ import annotations

import base64
import math

import pytest

from config import load_config
from tests.hostile import bombs, live, routes

KiB = 1024
MiB = 1024 * KiB
SMALL_IMAGE_BYTES = 64 * KiB


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    with routes.hostile_app(tmp_path_factory.mktemp("body"), MAX_IMAGE_BYTES=SMALL_IMAGE_BYTES) as app:
        yield app


@pytest.fixture(scope="module")
def client(app):
    return app.test_client()


def oversized(app) -> bytes:
    """A valid PNG at the start (what a careless decoder would keep), then bytes past the body limit."""
    image = bombs.small_png()
    return image + b"\x00" * (app.config["MAX_CONTENT_LENGTH"] + 4 * KiB - len(image))


def test_a_chunked_body_over_the_limit_is_413_on_every_route(app, client):
    """The report: a chunked body was cut to the limit and accepted (201, a corrupt file stored)."""
    body, limit = oversized(app), app.config["MAX_CONTENT_LENGTH"]
    wrong = []
    for route in routes.all_routes(app):
        response = client.open(
            route.path,
            method=route.method,
            data=body,
            headers={"Transfer-Encoding": "chunked", "Content-Type": "image/png"},
            environ_overrides={"wsgi.input_terminated": True},
        )
        answer = response.get_json(silent=True) or {}
        json_path = route.rule.startswith(routes.json_prefixes())
        refused = (answer.get("code"), answer.get("limit_bytes")) == ("payload_too_large", limit)
        if response.status_code != 413 or (json_path and not refused):
            wrong.append(f"{route}: {response.status_code} {answer}")
    assert not wrong, "\n".join(wrong)
    assert routes.stored_count(app) == 0


def test_a_declared_body_over_the_limit_is_413_even_where_the_route_reads_none(app, client):
    body = oversized(app)
    wrong = []
    for route in routes.all_routes(app):
        response = client.open(route.path, method=route.method, data=body, content_type="image/png")
        if response.status_code != 413:
            wrong.append(f"{route}: {response.status_code}")
    assert not wrong, "\n".join(wrong)
    assert routes.stored_count(app) == 0


def test_the_body_limit_admits_the_largest_image_in_every_encoding():
    wrong = []
    for image_bytes in (8 * MiB, 64 * KiB, 1024, 5 * MiB + 1, 20 * MiB):
        body_limit = load_config({"MAX_IMAGE_BYTES": image_bytes}, environ={})["MAX_CONTENT_LENGTH"]
        base64_json = len('{"image": "data:image/png;base64,"}') + 4 * math.ceil(image_bytes / 3)
        multipart = image_bytes + 1024  # boundary, part headers and a file name
        # Room for the options beside the image, and a whole MiB, as nginx's client_max_body_size says it.
        if body_limit < max(base64_json, multipart) + 16 * KiB or body_limit % MiB:
            wrong.append(f"MAX_IMAGE_BYTES={image_bytes}: MAX_CONTENT_LENGTH={body_limit}")
    assert not wrong, "\n".join(wrong)


def test_an_explicit_body_limit_under_the_images_is_raised_to_it():
    config = load_config({"MAX_IMAGE_BYTES": 8 * MiB, "MAX_CONTENT_LENGTH": 1 * MiB}, environ={})
    assert (
        config["MAX_CONTENT_LENGTH"]
        == load_config({"MAX_IMAGE_BYTES": 8 * MiB}, environ={})["MAX_CONTENT_LENGTH"]
    )
    assert load_config({"MAX_CONTENT_LENGTH": 64 * MiB}, environ={})["MAX_CONTENT_LENGTH"] == 64 * MiB


@pytest.fixture(scope="module")
def default_limits_app(tmp_path_factory):
    """The default MAX_IMAGE_BYTES (8 MiB), where the report found the two limits disagreeing."""
    with routes.hostile_app(tmp_path_factory.mktemp("defaults")) as app:
        yield app


def test_an_image_of_max_image_bytes_passes_in_every_encoding_and_one_byte_more_is_413(default_limits_app):
    app = default_limits_app
    client = app.test_client()
    limit = app.config["MAX_IMAGE_BYTES"]
    at_limit, over = bombs.png_padded(limit), bombs.png_padded(limit + 1)
    targets = routes.image_routes(app, client)
    wrong = []
    for route, encodings in targets.items():
        for encoding in encodings:
            response = client.open(
                route.path, method=route.method, **routes.image_request(at_limit, encoding)
            )
            if response.status_code == 413 or response.status_code >= 500:
                wrong.append(f"{route} {encoding} at the limit: {response.status_code}")
            response = client.open(route.path, method=route.method, **routes.image_request(over, encoding))
            code = (response.get_json(silent=True) or {}).get("code")
            if (response.status_code, code) != (413, "payload_too_large"):
                wrong.append(f"{route} {encoding} one byte over: {response.status_code} {code}")
    data_url = "data:image/png;base64," + base64.b64encode(at_limit).decode()
    response = client.post("/api/predict", json={"image": data_url, "top": 3})
    if response.status_code == 413:
        wrong.append("a data URL at the limit, with an option: 413")
    assert not wrong, "\n".join(wrong)


# --- under gunicorn: framing and pipelining ---------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with live.gunicorn(tmp_path_factory.mktemp("gunicorn"), MAX_IMAGE_BYTES=str(SMALL_IMAGE_BYTES)) as server:
        yield server


def limit_of(server) -> int:
    """The server's MAX_CONTENT_LENGTH, as its 413 states it."""
    request = b"POST /images HTTP/1.1\r\nHost: t\r\nContent-Type: image/png\r\nContent-Length: 999999999\r\n"
    answers, _ = live.exchange(server, request + b"Connection: close\r\n\r\n")
    assert answers and answers[0].status == 413, answers
    return answers[0].json()["limit_bytes"]


PIPELINED = b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"


@pytest.mark.parametrize("overshoot", [4 * KiB, 4 * MiB], ids=["a little over", "far over"])
def test_gunicorn_refuses_a_chunked_oversize_body_and_keeps_the_connection_in_step(server, overshoot):
    limit = limit_of(server)
    image = bombs.small_png()
    body = image + b"\x00" * (limit + overshoot - len(image))
    head = (
        b"POST /images HTTP/1.1\r\nHost: t\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    answers, closed = live.exchange(server, head + live.chunked(body) + PIPELINED)
    assert answers, "no answer at all"
    first = answers[0]
    # The body limit refused it, not the image limit (which a body cut at the limit can pass).
    assert first.status == 413 and first.json()["code"] == "payload_too_large", first
    assert first.json()["limit_bytes"] == limit, first.json()
    # What follows the 413 is either the pipelined request's own answer, or the connection closing
    # (gunicorn drains at most 64 KiB of an unread body, then closes); never a hang or a misparse.
    rest = answers[1:]
    assert closed, "the connection neither answered the pipelined request nor closed"
    assert rest == [] or (len(rest) == 1 and rest[0].status == 200 and rest[0].json()["status"] == "ok"), rest
    if overshoot < 64 * KiB:
        assert len(rest) == 1, "a body a little over the limit is drained and the next request answered"
    answers, _ = live.exchange(server, b"GET /images HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert answers[0].status == 200 and answers[0].json()["total"] == 0, "nothing is stored"
