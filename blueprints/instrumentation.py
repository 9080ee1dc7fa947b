"""Request ids, the access log, the IP allow-list and Prometheus metrics for every request."""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import secrets
import time
from typing import Any

from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client import REGISTRY as DEFAULT_REGISTRY

from blueprints.errors import error_response

log = logging.getLogger("vision.access")

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)

REQUESTS = Counter(
    "http_requests_total", "HTTP requests by endpoint, method and status.", ["endpoint", "method", "status"]
)
LATENCY = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency by endpoint.",
    ["endpoint"],
    buckets=LATENCY_BUCKETS,
)
ERRORS = Counter("http_errors_total", "API errors by machine code.", ["code", "status"])

# Sent with every answer. Pages load only their own scripts and styles (no inline script, no CDN),
# draw into canvases, and show webcam frames and uploads from blob:/data: URLs; nothing may frame them.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "media-src 'self' blob:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


# Methods named in the metrics; any other a client sends is counted as "other", so nobody can add a
# time series per request by inventing method names.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def metric_children(endpoint: str, method: str, status: int) -> tuple[Any, Any]:
    """Return the request counter's and the latency histogram's series for one kind of request.

    Remembered: prometheus_client's labels() validates, converts and locks on every call. The keys
    are bounded (endpoints are the app's routes or "unmatched", methods the set above, statuses the
    few an app answers), as they are in the metrics themselves.
    """
    key = (endpoint, method if method in METHODS else "other", status)
    children = _children.get(key)
    if children is None:
        children = _children[key] = (REQUESTS.labels(key[0], key[1], str(status)), LATENCY.labels(endpoint))
    return children


def multiprocess_dir() -> str | None:
    """Return the shared metrics folder when running under several worker processes."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def metrics_registry() -> CollectorRegistry:
    """Return a registry that sees every worker's samples (or this process's when alone)."""
    if multiprocess_dir():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return DEFAULT_REGISTRY


def metrics_response() -> Response:
    """Render the Prometheus text exposition."""
    # CONTENT_TYPE_LATEST already names its charset; as a mimetype Flask would append a second one.
    return Response(generate_latest(metrics_registry()), content_type=CONTENT_TYPE_LATEST)


def route_stats(endpoints: list[str]) -> dict[str, dict]:
    """Return count, mean and p95 latency (ms) per endpoint, aggregated across workers."""
    buckets: dict[str, dict[float, float]] = {e: {} for e in endpoints}
    sums = dict.fromkeys(endpoints, 0.0)
    counts = dict.fromkeys(endpoints, 0.0)
    for metric in metrics_registry().collect():
        if metric.name != "http_request_duration_seconds":
            continue
        for sample in metric.samples:
            endpoint = sample.labels.get("endpoint")
            if endpoint not in buckets:
                continue
            if sample.name.endswith("_bucket"):
                le = float(sample.labels["le"])
                buckets[endpoint][le] = buckets[endpoint].get(le, 0.0) + sample.value
            elif sample.name.endswith("_sum"):
                sums[endpoint] += sample.value
            elif sample.name.endswith("_count"):
                counts[endpoint] += sample.value
    stats = {}
    for endpoint in endpoints:
        count = counts[endpoint]
        stats[endpoint] = {
            "count": int(count),
            "mean_ms": round(sums[endpoint] / count * 1000, 2) if count else None,
            "p95_ms": _quantile_ms(buckets[endpoint], count, 0.95) if count else None,
        }
    return stats


def _quantile_ms(cumulative: dict[float, float], count: float, q: float) -> float:
    """Estimate a quantile from cumulative histogram buckets, interpolating inside the bucket."""
    target = q * count
    lower, below = 0.0, 0.0
    for le in sorted(cumulative):
        seen = cumulative[le]
        if seen >= target:
            if le == float("inf"):
                return round(lower * 1000, 2)
            width = seen - below
            fraction = (target - below) / width if width else 1.0
            return round((lower + (le - lower) * fraction) * 1000, 2)
        lower, below = le, seen
    return round(lower * 1000, 2)


def client_address() -> str:
    """Return the client's address, taking X-Forwarded-For only from the trusted proxies."""
    from flask import current_app

    peer = _address(request.remote_addr)
    hops = current_app.config["TRUSTED_PROXIES"]
    proxies = current_app.config["TRUSTED_PROXY_NETWORKS"]
    forwarded = [p.strip() for p in request.headers.get("X-Forwarded-For", "").split(",") if p.strip()]
    # Each entry was appended by the hop to its right (the last one by the peer itself): walk from
    # the right while the hop that wrote the entry is a trusted proxy, as nginx's real_ip_recursive
    # and werkzeug's ProxyFix do. An entry that is not an address ends the walk with no address.
    for entry in reversed(forwarded[-hops:] if hops else []):
        if peer is None or not any(peer in net for net in proxies):
            break
        peer = _address(entry)
    return str(peer) if peer is not None else ""


def _address(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """Parse an address; an IPv4 address written as IPv6 (::ffff:a.b.c.d) is the IPv4 one."""
    try:
        address = ipaddress.ip_address(text or "")
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def init_app(app: Flask) -> None:
    """Install the per-request hooks."""
    networks = app.config["ALLOWED_NETWORKS"]

    @app.before_request
    def start_request():
        # A proxy's id (nginx's $request_id) is kept for tracing; anything else gets a fresh one, so
        # what is echoed back and logged is never arbitrary client text.
        given = request.headers.get("X-Request-ID", "")
        g.request_id = given if REQUEST_ID.fullmatch(given) else secrets.token_hex(8)  # 0.6 us; uuid4 2.1
        g.started = time.perf_counter()
        if networks:
            address = _address(client_address())
            if address is None or not any(address in net for net in networks):
                # The address may have come through X-Forwarded-For: the answer repeats nothing the
                # client sent. The log names it, as the address that was checked.
                log.warning("client %s is not in ALLOWED_IPS", address or "unknown")
                return error_response(403, "forbidden", "This client is not in ALLOWED_IPS.")
        return None

    @app.after_request
    def finish_request(response: Response) -> Response:
        elapsed = time.perf_counter() - g.get("started", time.perf_counter())
        endpoint = request.endpoint or "unmatched"
        if endpoint != "static":
            counter, latency = metric_children(endpoint, request.method, response.status_code)
            counter.inc()
            latency.observe(elapsed)
            if response.status_code >= 400 and response.is_json:
                code = (response.get_json(silent=True) or {}).get("code", "unknown")
                ERRORS.labels(str(code), str(response.status_code)).inc()
        request_id = g.get("request_id", "-")
        response.headers["X-Request-ID"] = request_id
        # A route may set its own; one pass over the few headers there, not setdefault per header
        # (werkzeug's lookup raises and catches a KeyError for each one missing: 2% of a request).
        present = {name.lower() for name in response.headers.keys()}  # noqa: SIM118 (iterating gives pairs)
        for name, value in SECURITY_HEADERS.items():
            if name.lower() not in present:
                response.headers.add(name, value)
        # The log format adds rid= from the record; the message does not repeat it.
        log.info(
            "%s %s %s %.1fms",
            request.method,
            request.path,
            response.status_code,
            elapsed * 1000,
            extra={"request_id": request_id},
        )
        return response
