"""Forwarded addresses: X-Forwarded-For counts only when a trusted proxy wrote it.

A client that reaches the server directly, or through a proxy that is not configured, must not be
able to pick the address that ALLOWED_IPS checks; the 403 says nothing the client sent.
"""

from __future__ import annotations

import pytest

from app import create_app
from config import ConfigError, load_config
from tests.conftest import hide_environment

ALLOWED = ["10.1.0.0/16"]
ROUTES = [
    ("get", "/health", {}),
    ("get", "/api/system_info", {}),
    ("get", "/images", {}),
    ("post", "/api/predict", {"json": {"image": ""}}),
    ("post", "/images/0123456789abcdef0123456789abcdef/label", {"json": {"label": "1"}}),
    ("get", "/docs", {}),
]


@pytest.fixture
def make_app(base_app_config, monkeypatch):
    """Build an app with the allow-list and the given proxy settings."""
    hide_environment(monkeypatch)

    def make(**settings):
        return create_app({**base_app_config, "ALLOWED_IPS": ALLOWED, **settings})

    return make


def status(app, peer: str, forwarded: str | None, method: str = "get", path: str = "/health", **kwargs):
    headers = {"X-Forwarded-For": forwarded} if forwarded is not None else {}
    response = app.test_client().open(
        path, method=method.upper(), headers=headers, environ_base={"REMOTE_ADDR": peer}, **kwargs
    )
    return response


@pytest.mark.parametrize(("method", "path", "kwargs"), ROUTES)
def test_a_direct_client_cannot_forge_its_address(make_app, method, path, kwargs):
    """The reported attack: TRUSTED_PROXIES=1, the client talks to gunicorn itself."""
    app = make_app(TRUSTED_PROXIES=1)
    response = status(app, "203.0.113.7", "10.1.9.9", method, path, **kwargs)
    assert response.status_code == 403
    assert response.get_json()["code"] == "forbidden"


@pytest.mark.parametrize(
    ("settings", "peer", "forwarded", "expected"),
    [
        # nginx on the same host (the default trusted proxies are the loopback addresses).
        ({"TRUSTED_PROXIES": 1}, "127.0.0.1", "10.1.9.9", 200),
        ({"TRUSTED_PROXIES": 1}, "::1", "10.1.9.9", 200),
        ({"TRUSTED_PROXIES": 1}, "::ffff:127.0.0.1", "10.1.9.9", 200),
        ({"TRUSTED_PROXIES": 1}, "127.0.0.1", "203.0.113.7", 403),
        # The client's own X-Forwarded-For comes first; nginx appends the address it saw.
        ({"TRUSTED_PROXIES": 1}, "127.0.0.1", "10.1.9.9, 203.0.113.7", 403),
        ({"TRUSTED_PROXIES": 1}, "127.0.0.1", "203.0.113.7, 10.1.9.9", 200),
        # No header from a trusted proxy: the proxy itself is the client.
        ({"TRUSTED_PROXIES": 1, "TRUSTED_PROXY_IPS": ["10.1.0.1"]}, "10.1.0.1", None, 200),
        # Entries that are not addresses leave the client unknown: refused.
        ({"TRUSTED_PROXIES": 1}, "127.0.0.1", "not-an-address", 403),
        ({"TRUSTED_PROXIES": 1}, "127.0.0.1", "10.1.9.9:443", 403),
        # A proxy elsewhere on the network must be named.
        ({"TRUSTED_PROXIES": 1}, "192.0.2.10", "10.1.9.9", 403),
        ({"TRUSTED_PROXIES": 1, "TRUSTED_PROXY_IPS": ["192.0.2.0/28"]}, "192.0.2.10", "10.1.9.9", 200),
        ({"TRUSTED_PROXIES": 1, "TRUSTED_PROXY_IPS": ["192.0.2.0/28"]}, "127.0.0.1", "10.1.9.9", 403),
        # Two proxies (a CDN, then nginx): the walk stops at the first hop that is not trusted.
        ({"TRUSTED_PROXIES": 2, "TRUSTED_PROXY_IPS": ["127.0.0.1", "198.51.100.0/24"]},
         "127.0.0.1", "10.1.9.9, 198.51.100.4", 200),
        ({"TRUSTED_PROXIES": 2, "TRUSTED_PROXY_IPS": ["127.0.0.1", "198.51.100.0/24"]},
         "127.0.0.1", "10.1.9.9, 203.0.113.7", 403),
        # ... and never walks further than TRUSTED_PROXIES hops.
        ({"TRUSTED_PROXIES": 1, "TRUSTED_PROXY_IPS": ["127.0.0.1", "198.51.100.0/24"]},
         "127.0.0.1", "10.1.9.9, 198.51.100.4", 403),
        # TRUSTED_PROXIES=0: the header is never read, whoever sends it.
        ({"TRUSTED_PROXIES": 0}, "127.0.0.1", "10.1.9.9", 403),
        ({"TRUSTED_PROXIES": 0}, "10.1.2.3", "203.0.113.7", 200),
    ],
)  # fmt: skip
def test_the_walk_stops_at_the_first_untrusted_hop(make_app, settings, peer, forwarded, expected):
    assert status(make_app(**settings), peer, forwarded).status_code == expected


def test_the_403_repeats_nothing_the_client_sent(make_app):
    app = make_app(TRUSTED_PROXIES=1)
    sent = {
        "X-Forwarded-For": "10.9.9.9, 203.0.113.99",
        "User-Agent": "agent-marker-5150",
        "Referer": "http://referer-marker.example/",
    }
    for peer in ("127.0.0.1", "203.0.113.7"):
        response = app.test_client().get(
            "/api/system_info?q=query-marker", headers=sent, environ_base={"REMOTE_ADDR": peer}
        )
        assert response.status_code == 403
        body = response.get_data(as_text=True)
        for marker in ("10.9.9.9", "203.0.113", "agent-marker", "referer-marker", "query-marker"):
            assert marker not in body, f"the 403 repeats {marker!r}: {body}"
        assert set(response.get_json()) == {"error", "code"}


def test_trusted_proxy_setting_is_checked_at_start_up():
    assert load_config(environ={})["TRUSTED_PROXY_IPS"] == ["127.0.0.1", "::1"]
    config = load_config(environ={"VISION_TRUSTED_PROXY_IPS": "10.0.0.2, 10.0.1.0/24"})
    assert config["TRUSTED_PROXY_IPS"] == ["10.0.0.2", "10.0.1.0/24"]
    with pytest.raises(ConfigError, match="TRUSTED_PROXY_IPS"):
        load_config(environ={"VISION_TRUSTED_PROXY_IPS": "nginx.internal"})
    with pytest.raises(ConfigError, match="TRUSTED_PROXIES"):
        load_config(environ={"VISION_TRUSTED_PROXIES": "-1"})
