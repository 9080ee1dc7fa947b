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
