"""The access log and the metrics exposition, as an operator reads them."""

from __future__ import annotations

import logging

import pytest


def test_access_log_names_the_request_id_once(client, caplog):
    caplog.set_level(logging.INFO, logger="vision.access")
    client.get("/health", headers={"X-Request-ID": "abc123"})
    lines = [r for r in caplog.records if r.name == "vision.access"]
    assert lines, "no access-log line"
    record = lines[-1]
    assert record.request_id == "abc123"
    assert "abc123" not in record.getMessage()
    formatted = logging.Formatter("%(message)s rid=%(request_id)s").format(record)
    assert formatted.count("abc123") == 1


def test_metrics_content_type_has_one_charset(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].lower().count("charset") == 1


@pytest.mark.parametrize("path", ["/", "/gallery", "/docs", "/health", "/api/system_info", "/no-such-page"])
def test_every_answer_carries_the_security_headers(client, path):
    headers = client.get(path).headers
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    policy = dict(part.strip().split(" ", 1) for part in headers["Content-Security-Policy"].split(";"))
    assert policy["script-src"] == "'self'"  # no inline scripts, no CDN
    assert "'unsafe-inline'" not in headers["Content-Security-Policy"]
    assert policy["frame-ancestors"] == "'none'"


def test_invented_methods_share_one_metrics_series(client):
    # Each new label set is a time series kept for the life of the process (and a file entry per
    # worker): a client must not be able to add one per request by inventing method names.
    for i in range(5):
        assert client.open("/health", method=f"BREW{i}").status_code == 405
    text = client.get("/metrics").get_data(as_text=True)
    assert "BREW" not in text
    assert 'http_requests_total{endpoint="unmatched",method="other",status="405"}' in text


def test_hooks_and_views_are_checked_for_async_once(app, client, monkeypatch):
    from flask import Flask

    client.get("/health")  # every hook and the view seen once
    checked = []
    original = Flask.ensure_sync
    monkeypatch.setattr(Flask, "ensure_sync", lambda self, func: checked.append(func) or original(self, func))
    for _ in range(3):
        assert client.get("/health").status_code == 200
    assert checked == []
