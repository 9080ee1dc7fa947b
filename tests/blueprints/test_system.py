"""System endpoints, the error shape, the allow-list, metrics and the OpenAPI document."""

from __future__ import annotations

import os
import re

from openapi_spec_validator import validate

from app import create_app


def test_system_info_keeps_the_original_format(client):
    body = client.get("/api/system_info").get_json()
    assert re.fullmatch(r"\d{1,3}%", body["memory"]) and re.fullmatch(r"\d{1,3}%", body["cpu"])
    assert 0 <= body["memory_percent"] <= 100 and 0 <= body["cpu_percent"] <= 100
    assert body["pid"] == os.getpid() and body["process_rss_bytes"] > 10_000_000


def test_system_info_is_read_at_most_every_half_second_and_shared_in_between(monkeypatch):
    from blueprints import system

    now = [100.0]
    reads = []

    def cpu_percent(interval=None):
        reads.append(now[0])
        return 10.0 * len(reads)  # a new figure at every reading

    monkeypatch.setattr(system.psutil, "cpu_percent", cpu_percent)
    sampler = system.SystemSampler(period=0.5, clock=lambda: now[0])
    reads.clear()  # the priming call
    first = sampler.read()
    now[0] += 0.4
    assert sampler.read() is first and len(reads) == 1  # 0.4 s later: the same reading
    now[0] += 0.1
    second = sampler.read()
    assert len(reads) == 2 and second["cpu_percent"] == 20.0 and second["cpu"] == "20%"
    assert first["cpu_percent"] == 10.0


def test_health(client):
    r = client.get("/health")
    assert r.status_code == 200 and r.get_json() == {"status": "ok"}
    assert r.headers["X-Request-ID"]


def test_request_id_is_echoed(client):
    assert client.get("/health", headers={"X-Request-ID": "abc123"}).headers["X-Request-ID"] == "abc123"


def test_ready_lists_every_model(client, app):
    r = client.get("/ready")
    body = r.get_json()
    names = {m["name"] for m in body["models"]}
    assert set(app.config["MODELS"]) <= names
    registry = app.extensions["registry"]
    assert r.status_code == (200 if registry.ready else 503)
    for row in body["models"]:
        if row["loaded"]:
            assert row["warm"] and row["version"] and row["file"].endswith(".onnx") or row["file"]


def test_ready_is_503_and_names_the_failure_when_a_model_is_missing(base_app_config):
    app = create_app(
        {**base_app_config, "MODELS": {"numbers": {"type": "numbers", "path": "models/missing.onnx"}}}
    )
    r = app.test_client().get("/ready")
    assert r.status_code == 503
    (row,) = [m for m in r.get_json()["models"] if m["name"] == "numbers"]
    assert row["loaded"] is False and "missing.onnx" in row["error"]


def test_a_model_route_without_its_model_answers_503_json(base_app_config):
    app = create_app({**base_app_config, "MODELS": {}, "CLASSIFIER_DIRS": []})
    r = app.test_client().post("/api/predict", json={"image": "x"})
    assert r.status_code == 503
    assert r.get_json()["code"] == "model_not_loaded"


def test_unknown_model_type_fails_that_model_only(base_app_config):
    app = create_app({**base_app_config, "MODELS": {"x": {"type": "nope", "path": "x.onnx"}}})
    assert "unknown model type" in app.extensions["registry"].failures["x"]


def test_metrics_count_requests_and_errors(client):
    client.get("/health")
    client.get("/api/nothing-here")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'http_requests_total{endpoint="system.health",method="GET",status="200"}' in text
    assert "http_request_duration_seconds_bucket" in text
    assert 'http_errors_total{code="not_found",status="404"}' in text


def test_api_404_405_are_json(client):
    r = client.get("/api/nothing-here")
    assert r.status_code == 404 and r.get_json()["code"] == "not_found"
    r = client.get("/api/predict")
    assert r.status_code == 405 and r.get_json()["code"] == "method_not_allowed"


def test_html_pages_keep_html_errors(client):
    r = client.get("/no-such-page", headers={"Accept": "text/html"})
    assert r.status_code == 404 and r.mimetype == "text/html"


def test_allow_list_rejects_other_clients(base_app_config):
    app = create_app({**base_app_config, "ALLOWED_IPS": ["10.1.0.0/16"]})
    client = app.test_client()
    r = client.get("/health", environ_base={"REMOTE_ADDR": "192.168.1.5"})
    assert r.status_code == 403 and r.get_json()["code"] == "forbidden"
    assert client.get("/health", environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 200


def test_allow_list_trusts_forwarded_for_only_behind_a_proxy(base_app_config):
    app = create_app({**base_app_config, "ALLOWED_IPS": ["10.1.0.0/16"], "TRUSTED_PROXIES": 1})
    client = app.test_client()
    headers = {"X-Forwarded-For": "10.1.9.9"}
    assert (
        client.get("/health", headers=headers, environ_base={"REMOTE_ADDR": "127.0.0.1"}).status_code == 200
    )
    app2 = create_app({**base_app_config, "ALLOWED_IPS": ["10.1.0.0/16"]})
    r = app2.test_client().get("/health", headers=headers, environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert r.status_code == 403


def test_openapi_document_is_valid_and_covers_the_api(client):
    spec = client.get("/openapi.json").get_json()
    validate(spec)
    assert spec["openapi"].startswith("3.")
    for path in ("/api/system_info", "/ready", "/health"):
        assert path in spec["paths"], path
    assert "SystemInfo" in spec["components"]["schemas"]


def test_docs_page_is_served_locally(client):
    html = client.get("/docs").get_data(as_text=True)
    assert "/static/vendor/swagger-ui/swagger-ui-bundle.js" in html
    assert "http://" not in html and "https://" not in html
    assert client.get("/static/vendor/swagger-ui/swagger-ui-bundle.js").status_code == 200


def test_unhandled_errors_are_json_500_on_api_routes(app):
    @app.get("/api/_boom")
    def boom():
        raise RuntimeError("kaput")

    r = app.test_client().get("/api/_boom")
    assert r.status_code == 500 and r.get_json()["code"] == "internal_error"
    assert "kaput" not in r.get_data(as_text=True)
