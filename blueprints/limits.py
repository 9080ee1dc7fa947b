"""Limits every request meets before its route: URL length, body size however it is framed, JSON.

- A URL over MAX_URL_LENGTH is 414 (gunicorn.conf.py lets URLs up to its own maximum reach the app,
  so API paths get the JSON 414 rather than gunicorn's HTML one).
- A body over MAX_CONTENT_LENGTH is 413 on every route, read or not by it. With a Content-Length
  that is known before reading; a chunked body has none, and werkzeug's limited stream stops at the
  limit without raising when a read ends exactly there (it only raises on a read past it), so the
  body would arrive cut to the limit and be taken for whole. Here one byte past the limit is
  asked for: if it exists, the body is refused.
- JSON is parsed by models.image.parse_json, also for `request.get_json()`: nesting bounded before
  parsing, only finite numbers.
- Pillow's own pixel limit is the app's MAX_IMAGE_PIXELS.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, current_app, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import RequestEntityTooLarge, RequestURITooLarge

from models.image import limit_pillow, parse_json


class BoundedJSONProvider(DefaultJSONProvider):
    """Flask's JSON, reading through parse_json: bounded nesting, finite numbers (else ValueError)."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return parse_json(s)


def request_uri() -> str:
    """Return the request's target as the client sent it (path and query, still percent-encoded)."""
    environ = request.environ
    given = environ.get("RAW_URI") or environ.get("REQUEST_URI")  # gunicorn / werkzeug
    if given:
        return given
    query = environ.get("QUERY_STRING", "")
    return request.path + (f"?{query}" if query else "")


def check_request() -> None:
    """Refuse a URL or a body over the limits, before any route reads anything."""
    config = current_app.config
    if len(request_uri()) > config["MAX_URL_LENGTH"]:
        raise RequestURITooLarge(f"The URL is longer than the {config['MAX_URL_LENGTH']} character limit.")
    limit = config["MAX_CONTENT_LENGTH"]
    length = request.content_length
    if length is not None:
        if length > limit:
            raise RequestEntityTooLarge()
        return
    chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    # Only a server that ends the input at the body's end (gunicorn, waitress, werkzeug's own) can be
    # asked for a byte past it: elsewhere the read could wait on the socket.
    if chunked and request.environ.get("wsgi.input_terminated"):
        request.get_data(cache=True)  # at most `limit` bytes, kept for the route
        if request.environ["wsgi.input"].read(1):
            raise RequestEntityTooLarge()


def init_app(app: Flask) -> None:
    """Install the request limits, the bounded JSON provider and Pillow's pixel limit."""
    provider = BoundedJSONProvider(app)
    provider.sort_keys = app.json.sort_keys
    app.json = provider
    limit_pillow(app.config["MAX_IMAGE_PIXELS"])
    app.before_request(check_request)
