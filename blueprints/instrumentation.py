"""Request ids, the access log, the IP allow-list and Prometheus metrics for every request."""

from __future__ import annotations

import ipaddress
import logging
import os
import time
import uuid

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
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


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
    """Return the client's address, trusting X-Forwarded-For only from configured proxies."""
    from flask import current_app

    hops = current_app.config["TRUSTED_PROXIES"]
    if hops:
        forwarded = [p.strip() for p in request.headers.get("X-Forwarded-For", "").split(",") if p.strip()]
        if len(forwarded) >= hops:
            return forwarded[-hops]
    return request.remote_addr or ""


def init_app(app: Flask) -> None:
    """Install the per-request hooks."""
    networks = app.config["ALLOWED_NETWORKS"]

    @app.before_request
    def start_request():
        g.request_id = request.headers.get("X-Request-ID") or uuid.uuid4().hex[:16]
        g.started = time.perf_counter()
        if networks:
            try:
                address = ipaddress.ip_address(client_address())
            except ValueError:
                address = None
            if address is None or not any(address in net for net in networks):
                return error_response(403, "forbidden", f"Client {client_address()} is not in ALLOWED_IPS.")
        return None

    @app.after_request
    def finish_request(response: Response) -> Response:
        elapsed = time.perf_counter() - g.get("started", time.perf_counter())
        endpoint = request.endpoint or "unmatched"
        if endpoint != "static":
            REQUESTS.labels(endpoint, request.method, str(response.status_code)).inc()
            LATENCY.labels(endpoint).observe(elapsed)
            if response.status_code >= 400 and response.is_json:
                code = (response.get_json(silent=True) or {}).get("code", "unknown")
                ERRORS.labels(str(code), str(response.status_code)).inc()
        request_id = g.get("request_id", "-")
        response.headers["X-Request-ID"] = request_id
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
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
