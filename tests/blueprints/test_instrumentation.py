"""The access log and the metrics exposition, as an operator reads them."""

from __future__ import annotations

import logging


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
