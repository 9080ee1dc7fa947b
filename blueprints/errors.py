"""One error shape for every API error: {"error": message, "code": machine_code, ...extra}.

API paths always answer JSON: errors keep the headers that go with their status (Allow on a 405),
a routing redirect on an API path is JSON too (with a Location on this host), and slashes are never
merged by redirect (werkzeug would send `//images` to the host `images`).
"""

from __future__ import annotations

import logging
import re
from typing import Any, NoReturn
from urllib.parse import urlsplit

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.routing import RequestRedirect

from models.registry import ModelNotLoaded
from models.runtime import ModelInputError

log = logging.getLogger(__name__)

# Paths that always answer JSON, whatever the client accepts.
JSON_PREFIXES = ("/api/", "/image-64", "/image-bin", "/images", "/vignette", "/ready", "/health")
# Headers an error keeps from werkzeug's own answer (Allow on 405, Retry-After, ...): all but these.
BODY_HEADERS = ("content-type", "content-length")
_SLASHES = re.compile("/{2,}")

HTTP_CODES = {
    400: "bad_request",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    308: "permanent_redirect",
    413: "payload_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
}


class ApiError(Exception):
    """An error answered as JSON with its status, machine code and extra fields."""

    def __init__(self, status: int, code: str, message: str, **extra: Any):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra


def api_error(status: int, code: str, message: str, **extra: Any) -> NoReturn:
    """Stop the request with a JSON error."""
    raise ApiError(status, code, message, **extra)


def error_response(status: int, code: str, message: str, **extra: Any) -> Response:
    """Build the one JSON error shape."""
    response = jsonify({"error": message, "code": code, **extra})
    response.status_code = status
    return response


def wants_json() -> bool:
    """True for API routes, and for clients that prefer JSON to HTML."""
    if _SLASHES.sub("/", request.path).startswith(JSON_PREFIXES):  # //api/x is an API path too
        return True
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return (
        best == "application/json" and request.accept_mimetypes[best] > request.accept_mimetypes["text/html"]
    )


def redirect_as_json() -> Response | None:
    """Answer a routing redirect on an API path in JSON, with a Location on this host."""
    redirect = request.routing_exception
    if not isinstance(redirect, RequestRedirect) or not wants_json():
        return None
    target = urlsplit(redirect.new_url)
    location = target.path + (f"?{target.query}" if target.query else "")
    response = error_response(redirect.code, HTTP_CODES[redirect.code], f"This resource is at {location}.")
    response.headers["Location"] = location
    return response


def init_app(app: Flask) -> None:
    """Register the handlers that turn every error into the one shape."""
    # Merging would answer //images with a redirect to http://images/ (another host); unmerged, a
    # doubled slash is simply a path that does not exist.
    app.url_map.merge_slashes = False
    # werkzeug answers its redirects itself, past the error handlers: catch them before the route.
    app.before_request(redirect_as_json)

    @app.errorhandler(ApiError)
    def handle_api_error(exc: ApiError):
        return error_response(exc.status, exc.code, exc.message, **exc.extra)

    @app.errorhandler(ModelInputError)
    def handle_model_input(exc: ModelInputError):
        return error_response(exc.status, exc.code, exc.message, **exc.extra)

    @app.errorhandler(ModelNotLoaded)
    def handle_not_loaded(exc: ModelNotLoaded):
        return error_response(
            503, "model_not_loaded", f"Model '{exc.name}' is not loaded: {exc.reason}.", model=exc.name
        )

    @app.errorhandler(HTTPException)
    def handle_http(exc: HTTPException):
        if not wants_json():
            return exc
        status = exc.code or 500
        if status == 413:
            limit = app.config.get("MAX_CONTENT_LENGTH")
            message = f"The request is larger than the {limit} byte limit."
            return error_response(413, "payload_too_large", message, limit_bytes=limit)
        response = error_response(status, HTTP_CODES.get(status, "http_error"), exc.description or exc.name)
        for name, value in exc.get_headers():
            if name.lower() not in BODY_HEADERS:
                response.headers[name] = value
        return response

    @app.errorhandler(Exception)
    def handle_unexpected(exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        if not wants_json():
            return "Internal Server Error", 500
        return error_response(500, "internal_error", "The server failed on this request; it is logged.")
