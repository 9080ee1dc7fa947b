"""Every route of the app, from its url_map, and the ways a hostile request reaches each.

Nothing here lists routes by hand: a route added later is attacked too. Routes with a request body
are the rules that take POST, PUT or PATCH; which of them take an image, and in which encodings,
is asked of the route itself with one small honest image per encoding (a route that answers it
took the image; one that answers 400 or 415 did not find an image there).
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image

from app import create_app
from tests.conftest import hide_environment
from tests.hostile.bombs import LIMIT_PIXELS, small_png

BODY_METHODS = ("POST", "PUT", "PATCH")
ARGUMENT = re.compile(r"<(?:[^:>]+:)?([^>]+)>")
ENCODINGS = ("json", "multipart", "raw")


@contextmanager
def hostile_app(folder: Path, **settings) -> Iterator[Flask]:
    """Build an app with its own store in `folder` and the hostile suite's small pixel limit.

    create_app sets Pillow's process-wide pixel limit from the app's; it is put back afterwards,
    so the suite's small limit never reaches other tests.
    """
    with pytest.MonkeyPatch.context() as mp:
        hide_environment(mp)
        mp.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)
        config = {
            "LOG_LEVEL": "ERROR",
            "SAVE_IMAGES": False,
            "IMAGE_DIR": str(folder / "images"),
            "DATABASE_URL": f"sqlite:///{folder / 'images.db'}",
            "MAX_IMAGE_PIXELS": LIMIT_PIXELS,
            **settings,
        }
        app = create_app(config)
        try:
            yield app
        finally:
            app.extensions["store"].close()


def stored_count(app: Flask) -> int:
    """Return how many images the app's store holds."""
    return app.extensions["store"].list()[1]


def upload(client: FlaskClient) -> str:
    """Store one small honest image and return its id (for routes under /images/<image_id>)."""
    response = client.post("/images", data=small_png(), content_type="image/png")
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()["id"]


@dataclass(frozen=True)
class Route:
    """One method of one url_map rule, with its path arguments filled in."""

    method: str
    rule: str
    path: str

    def __str__(self) -> str:
        return f"{self.method} {self.rule}"


def path_values(app: Flask, image_id: str) -> dict[str, str]:
    """Values for the path arguments the app's rules use: ids and names that exist."""
    return {"image_id": image_id, "name": app.config["DEFAULT_CLASSIFIER"], "filename": "css/site.css"}


def all_routes(app: Flask, image_id: str = "0" * 32) -> list[Route]:
    """Every (method, rule) of the app, HEAD and OPTIONS aside."""
    values = path_values(app, image_id)
    routes = []
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        # <name> or <converter:name>; an argument added later gets some value that reaches the route.
        path = ARGUMENT.sub(lambda m: values.get(m.group(1), "x"), rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            routes.append(Route(method, rule.rule, path))
    return routes


def body_routes(app: Flask, image_id: str = "0" * 32) -> list[Route]:
    """Every route that takes a request body."""
    return [r for r in all_routes(app, image_id) if r.method in BODY_METHODS]


def json_prefixes() -> tuple[str, ...]:
    """The path prefixes that always answer JSON (blueprints.errors.JSON_PREFIXES)."""
    from blueprints.errors import JSON_PREFIXES

    return JSON_PREFIXES


def api_routes(app: Flask, image_id: str = "0" * 32) -> list[Route]:
    """Every route under a path that always answers JSON."""
    return [r for r in all_routes(app, image_id) if r.rule.startswith(json_prefixes())]


def image_request(data: bytes, encoding: str, field: str = "image") -> dict:
    """Test-client keyword arguments that send `data` as an image in one encoding."""
    if encoding == "json":
        return {"json": {field: base64.b64encode(data).decode()}}
    if encoding == "multipart":
        return {"data": {field: (io.BytesIO(data), "upload.bin")}, "content_type": "multipart/form-data"}
    if encoding == "raw":
        return {"data": data, "content_type": "application/octet-stream"}
    raise ValueError(encoding)


def image_routes(app: Flask, client: FlaskClient) -> dict[Route, list[str]]:
    """Every route that takes an image, with the encodings it takes it in (asked of the route)."""
    honest = small_png()
    found: dict[Route, list[str]] = {}
    for route in body_routes(app):
        for encoding in ENCODINGS:
            response = client.open(route.path, method=route.method, **image_request(honest, encoding))
            # Looked at: answered (a low-certainty guess is 422), not "no image here".
            if response.status_code < 400 or response.status_code == 422:
                found.setdefault(route, []).append(encoding)
    return found


def json_routes(app: Flask, image_id: str) -> list[Route]:
    """Every route that takes a body: each of them reads JSON (an image route reads it for the image)."""
    return body_routes(app, image_id)
