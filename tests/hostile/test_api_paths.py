"""API paths always answer JSON: wrong methods (with their Allow header), stray slashes, long URLs.

Every rule under the JSON prefixes is tried, from the app's url_map. Under gunicorn a URL longer
than the app's MAX_URL_LENGTH but within gunicorn's limit_request_line gets the app's JSON 414;
only beyond gunicorn's own maximum does gunicorn answer (its own 414, before the app sees anything).
"""

from __future__ import annotations

import pytest
from werkzeug.routing import RequestRedirect

from tests.hostile import live, routes

UNUSUAL_METHODS = ("PATCH", "PUT", "DELETE", "POST", "GET")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    with routes.hostile_app(tmp_path_factory.mktemp("paths")) as app:
        yield app


@pytest.fixture(scope="module")
def client(app):
    return app.test_client()


def is_json_error(response, status: int | None = None) -> bool:
    answer = response.get_json(silent=True) or {}
    shaped = isinstance(answer.get("error"), str) and isinstance(answer.get("code"), str)
    return response.is_json and shaped and (status is None or response.status_code == status)


def test_a_wrong_method_is_405_json_with_allow_on_every_api_path(app, client):
    wrong = []
    paths = {route.path: route.rule for route in routes.api_routes(app)}
    for path, rule in paths.items():
        adapter = app.url_map.bind("localhost")
        allowed = set()
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            try:
                adapter.match(path, method=method)
                allowed.add(method)
            except Exception:  # noqa: BLE001 - MethodNotAllowed, NotFound or a redirect: not allowed
                pass
        method = next(m for m in UNUSUAL_METHODS if m not in allowed)
        response = client.open(path, method=method)
        allow = {m.strip() for m in response.headers.get("Allow", "").split(",") if m.strip()}
        if not is_json_error(response, 405) or not allowed <= allow:
            wrong.append(
                f"{method} {rule}: {response.status_code} Allow={sorted(allow)} (expected {sorted(allowed)})"
            )
    assert not wrong, "\n".join(wrong)


def slash_variants(path: str) -> list[str]:
    """A path with a trailing slash, a doubled slash inside, and a doubled leading slash."""
    inner = path.replace("/", "//", 2).replace("//", "/", 1) if path.count("/") > 1 else path + "//x"
    return [path + "/", inner, "/" + path]


def test_stray_slashes_on_api_paths_answer_json_and_never_leave_the_host(app, client):
    wrong = []
    for route in routes.api_routes(app):
        for variant in slash_variants(route.path):
            # The test client would read //x as a URL of the host x: the path goes in as a server has it.
            raw = {"PATH_INFO": variant, "REQUEST_URI": variant, "RAW_URI": variant}
            response = client.open("/", method=route.method, environ_overrides=raw)
            location = response.headers.get("Location", "")
            # Leading slashes collapse (werkzeug strips them): the route's own answer is fine then.
            refused_in_json = response.status_code < 300 or response.is_json
            if not refused_in_json or location.startswith(("http:", "https:", "//")):
                wrong.append(
                    f"{route.method} {variant}: {response.status_code} {response.content_type} {location}"
                )
    assert not wrong, "\n".join(wrong)


def test_a_redirect_on_an_api_path_is_json(tmp_path):
    """No API rule ends in a slash today; if one did, werkzeug's redirect would answer in JSON."""
    with routes.hostile_app(tmp_path) as app:
        app.add_url_rule("/api/_slashed/", "slashed", lambda: {"ok": True})
        response = app.test_client().get("/api/_slashed")
    assert response.status_code == RequestRedirect.code and is_json_error(response)
    assert response.headers["Location"] == "/api/_slashed/"


def test_a_long_url_is_a_json_414_on_every_api_path(app, client):
    limit = app.config["MAX_URL_LENGTH"]
    wrong = []
    for route in routes.api_routes(app):
        query = "q=" + "a" * limit
        response = client.open(f"{route.path}?{query}", method=route.method)
        if not is_json_error(response, 414):
            wrong.append(f"{route}: {response.status_code} {response.content_type}")
    assert not wrong, "\n".join(wrong)


def test_a_url_at_the_limit_is_served(app, client):
    path = "/api/classifier/models?q="
    response = client.get(path + "a" * (app.config["MAX_URL_LENGTH"] - len(path)))
    assert response.status_code == 200


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with live.gunicorn(tmp_path_factory.mktemp("gunicorn")) as server:
        yield server


def test_gunicorn_passes_long_urls_to_the_app_up_to_its_own_maximum(server):
    """A URL of 6,000 bytes (over gunicorn's default 4,094 limit) reaches the app: JSON 414."""
    request = (
        b"GET /api/classifier/models?q=" + b"a" * 6000 + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    answers, _ = live.exchange(server, request)
    assert answers[0].status == 414 and answers[0].headers["content-type"] == "application/json", answers
    assert answers[0].json()["code"] == "uri_too_long"
    # Beyond gunicorn's own maximum (8190 bytes of request line) gunicorn answers before the app:
    # still a 414, in gunicorn's words (see gunicorn.conf.py, limit_request_line).
    request = (
        b"GET /api/classifier/models?q=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    answers, _ = live.exchange(server, request)
    assert answers[0].status == 414
