"""Finding the image in a request: every place it may be, the options beside it, and bad requests.

Decoding itself (base64, arrays, formats, limits) is tested without Flask in tests/models/test_image.py.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from flask import Blueprint, jsonify
from PIL import Image

from blueprints.image_input import load_image, request_options
from tests.conftest import data_url, png_bytes

echo = Blueprint("echo", __name__)


@echo.post("/api/_echo")
def echo_image():
    image = load_image()
    gray = image.gray()
    return jsonify(
        {
            "source": image.source,
            "format": image.format,
            "width": image.width,
            "height": image.height,
            "filename": image.filename,
            "gray_mean": float(gray.mean()),
            "options": request_options(),
        }
    )


@pytest.fixture
def app(app):
    app.register_blueprint(echo)
    return app


def test_data_url(client):
    r = client.post("/api/_echo", json={"image": data_url(png_bytes(np.zeros((50, 60), np.uint8)))})
    body = r.get_json()
    assert r.status_code == 200, body
    assert (body["source"], body["format"], body["width"], body["height"]) == ("data_url", "PNG", 60, 50)


def test_plain_base64_and_options(client):
    b64 = base64.b64encode(png_bytes(np.full((8, 8), 200, np.uint8))).decode()
    body = client.post("/api/_echo", json={"image": b64, "top": 3}).get_json()
    assert body["source"] == "base64" and body["gray_mean"] == 200 and body["options"] == {"top": 3}


@pytest.mark.parametrize("field", ["image", "file"])
def test_multipart(client, field):
    data = {field: (io.BytesIO(png_bytes(np.zeros((5, 5), np.uint8))), "x.png"), "detect": "0"}
    body = client.post("/api/_echo", data=data, content_type="multipart/form-data").get_json()
    assert body["source"] == "multipart" and body["options"] == {"detect": "0"}
    assert body["filename"] == "x.png"


def test_form_field(client):
    b64 = base64.b64encode(png_bytes(np.full((3, 3), 7, np.uint8))).decode()
    body = client.post("/api/_echo?top=2", data={"image": b64, "detect": "no"}).get_json()
    assert body["source"] == "base64" and body["options"] == {"top": "2", "detect": "no"}


def test_raw_bytes_with_image_content_type(client):
    buf = io.BytesIO()
    Image.new("RGB", (12, 10), (255, 0, 0)).save(buf, format="JPEG")
    r = client.post("/api/_echo?detect=0", data=buf.getvalue(), content_type="image/jpeg")
    assert r.get_json()["format"] == "JPEG" and r.get_json()["options"] == {"detect": "0"}


def test_base64_drawing_field(client):
    r = client.post("/api/_echo", json={"base64_drawing": data_url(png_bytes(np.zeros((4, 4), np.uint8)))})
    assert r.status_code == 200


def test_legacy_nested_array_in_json(client):
    body = client.post("/api/_echo", json={"image": [[0, 20], [40, 60]]}).get_json()
    assert (body["source"], body["width"], body["height"]) == ("legacy_array", 2, 2)


def _bomb() -> bytes:
    buf = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(buf, format="PNG")  # 100 MP, a few KB compressed
    return buf.getvalue()


BAD_INPUTS = [
    ("empty body", {"data": b"", "content_type": "application/json"}, 400, "empty_body"),
    ("json without image", {"json": {"picture": "x"}}, 400, "missing_image"),
    ("invalid json", {"data": b"{not json", "content_type": "application/json"}, 400, "invalid_json"),
    ("json not an object", {"json": [1, 2]}, 400, "invalid_json"),
    ("wrong multipart field", {"data": {"photo": (io.BytesIO(b"x"), "x.png")}}, 400, "missing_image"),
    ("empty upload", {"data": {"image": (io.BytesIO(b""), "x.png")}}, 400, "empty_image"),
    ("empty raw body", {"data": b"", "content_type": "image/png"}, 400, "empty_body"),
    ("no body at all", {}, 400, "empty_body"),
    # Decoding errors (models.image) answer the same JSON shape.
    ("invalid base64", {"json": {"image": "data:image/png;base64,@@@not-base64@@@"}}, 400, "invalid_base64"),
    ("ragged array", {"json": {"image": "[[1, 2], [3]]"}}, 400, "invalid_array"),
    ("raw text as image", {"data": b"GIF89a-broken", "content_type": "image/gif"}, 415, "not_an_image"),
    (
        "oversized body",
        {"data": b"\x89PNG" + b"0" * (9 * 1024 * 1024), "content_type": "image/png"},
        413,
        "payload_too_large",
    ),
    ("decompression bomb", {"data": _bomb(), "content_type": "image/png"}, 413, "image_too_large"),
]


@pytest.mark.parametrize("case,kwargs,status,code", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input(client, case, kwargs, status, code):
    r = client.post("/api/_echo", **kwargs)
    assert r.status_code == status, r.get_data(as_text=True)[:300]
    assert r.is_json
    body = r.get_json()
    assert body["code"] == code
    assert isinstance(body["error"], str) and len(body["error"]) > 10


def test_the_apps_limits_are_applied(app, client):
    app.config["MAX_IMAGE_BYTES"] = 2048
    big = base64.b64encode(b"\x89PNG" + bytes(4096)).decode()
    r = client.post("/api/_echo", json={"image": big})
    assert r.status_code == 413 and r.get_json() == {
        "error": "The image is larger than the 2048 byte limit.",
        "code": "payload_too_large",
        "limit_bytes": 2048,
    }
    app.config["MAX_IMAGE_PIXELS"] = 99
    r = client.post("/api/_echo", json={"image": data_url(png_bytes(np.zeros((10, 10), np.uint8)))})
    assert r.status_code == 413 and r.get_json()["limit_pixels"] == 99


CHUNKED = {"Transfer-Encoding": "chunked"}
TERMINATED = {"wsgi.input_terminated": True}  # as gunicorn and waitress hand a chunked body over


def test_a_chunked_body_within_the_limit_is_read_whole(app, client):
    data = png_bytes(np.full((6, 7), 9, np.uint8))
    r = client.post(
        "/api/_echo",
        data=data,
        headers={**CHUNKED, "Content-Type": "image/png"},
        environ_overrides=TERMINATED,
    )
    assert r.status_code == 200 and r.get_json()["width"] == 7
    # A multipart form arrives chunked too: the body read for the limit is the one the form is parsed from.
    form = {"image": (io.BytesIO(data), "x.png"), "detect": "0"}
    r = client.post("/api/_echo", data=form, headers=CHUNKED, environ_overrides=TERMINATED)
    assert r.status_code == 200 and r.get_json()["options"] == {"detect": "0"}


def test_a_chunked_body_of_exactly_the_limit_passes_and_one_byte_more_is_413(app, client):
    limit = app.config["MAX_CONTENT_LENGTH"]
    data = png_bytes(np.zeros((4, 4), np.uint8))
    exact = data + b"\x00" * (limit - len(data))
    app.config["MAX_IMAGE_BYTES"] = limit
    r = client.post(
        "/api/_echo",
        data=exact,
        headers={**CHUNKED, "Content-Type": "image/png"},
        environ_overrides=TERMINATED,
    )
    assert r.status_code == 200
    r = client.post(
        "/api/_echo",
        data=exact + b"\x00",
        headers={**CHUNKED, "Content-Type": "image/png"},
        environ_overrides=TERMINATED,
    )
    assert r.status_code == 413 and r.get_json() == {
        "error": f"The request is larger than the {limit} byte limit.",
        "code": "payload_too_large",
        "limit_bytes": limit,
    }


def test_options_beside_the_image_are_read_with_the_same_bounded_json(client):
    b64 = base64.b64encode(png_bytes(np.zeros((4, 4), np.uint8))).decode()
    body = '{"image": "' + b64 + '", "top": NaN}'
    r = client.post("/api/_echo", data=body, content_type="application/json")
    assert r.status_code == 400 and r.get_json()["code"] == "invalid_json"
    assert "not finite" in r.get_json()["error"]
