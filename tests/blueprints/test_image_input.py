"""Every accepted image format and every bad input of the one image-input path."""

from __future__ import annotations

import base64
import io
import json

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
            "gray_mean": float(gray.mean()),
            "gray_min": int(gray.min()),
            "options": request_options(),
        }
    )


@pytest.fixture
def app(app):
    app.register_blueprint(echo)
    return app


def rgba_canvas() -> np.ndarray:
    """A transparent canvas with one opaque black square, as a browser canvas exports it."""
    arr = np.zeros((50, 60, 4), np.uint8)
    arr[10:20, 10:20, 3] = 255
    return arr


def test_data_url(client):
    r = client.post("/api/_echo", json={"image": data_url(png_bytes(rgba_canvas()))})
    body = r.get_json()
    assert r.status_code == 200, body
    assert (body["source"], body["format"], body["width"], body["height"]) == ("data_url", "PNG", 60, 50)


def test_transparency_is_composited_on_white(client):
    body = client.post("/api/_echo", json={"image": data_url(png_bytes(rgba_canvas()))}).get_json()
    # 100 black pixels out of 3000, the rest white: not black, as a naive RGB drop would give.
    assert body["gray_min"] == 0
    assert body["gray_mean"] == pytest.approx(255 * (1 - 100 / 3000), abs=0.5)


def test_plain_base64_and_options(client):
    b64 = base64.b64encode(png_bytes(np.full((8, 8), 200, np.uint8))).decode()
    body = client.post("/api/_echo", json={"image": b64, "top": 3}).get_json()
    assert body["source"] == "base64" and body["gray_mean"] == 200 and body["options"] == {"top": 3}


def test_urlsafe_base64_without_padding(client):
    raw = png_bytes(np.full((9, 7), 10, np.uint8))
    b64 = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    assert client.post("/api/_echo", json={"image": b64}).status_code == 200


@pytest.mark.parametrize("field", ["image", "file"])
def test_multipart(client, field):
    data = {field: (io.BytesIO(png_bytes(np.zeros((5, 5), np.uint8))), "x.png"), "detect": "0"}
    body = client.post("/api/_echo", data=data, content_type="multipart/form-data").get_json()
    assert body["source"] == "multipart" and body["options"] == {"detect": "0"}


def test_raw_bytes_with_image_content_type(client):
    buf = io.BytesIO()
    Image.new("RGB", (12, 10), (255, 0, 0)).save(buf, format="JPEG")
    r = client.post("/api/_echo?detect=0", data=buf.getvalue(), content_type="image/jpeg")
    assert r.get_json()["format"] == "JPEG" and r.get_json()["options"] == {"detect": "0"}


def test_base64_drawing_field(client):
    r = client.post("/api/_echo", json={"base64_drawing": data_url(png_bytes(rgba_canvas()))})
    assert r.status_code == 200


@pytest.mark.parametrize("as_string", [True, False])
def test_legacy_nested_array_gray(client, as_string):
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    value = json.dumps(arr.tolist()) if as_string else arr.tolist()
    body = client.post("/api/_echo", json={"image": value}).get_json()
    assert (body["source"], body["width"], body["height"]) == ("legacy_array", 4, 3)
    assert body["gray_mean"] == pytest.approx(arr.mean())


def test_legacy_nested_array_bgr(client):
    arr = np.zeros((4, 5, 3), np.uint8)
    arr[..., 2] = 255  # pure red in BGR
    body = client.post("/api/_echo", json={"image": json.dumps(arr.tolist())}).get_json()
    assert body["gray_mean"] == pytest.approx(76, abs=1)  # red's luma, proving BGR order


def test_exif_orientation_is_applied(client):
    img = Image.new("RGB", (40, 20), "white")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif)
    body = client.post("/api/_echo", data=buf.getvalue(), content_type="image/jpeg").get_json()
    assert (body["width"], body["height"]) == (20, 40)


def _bomb() -> bytes:
    buf = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(buf, format="PNG")  # 100 MP, a few KB compressed
    return buf.getvalue()


BAD_INPUTS = [
    ("empty body", {"data": b"", "content_type": "application/json"}, 400, "empty_body"),
    ("json without image", {"json": {"picture": "x"}}, 400, "missing_image"),
    ("empty image field", {"json": {"image": ""}}, 400, "missing_image"),
    ("invalid json", {"data": b"{not json", "content_type": "application/json"}, 400, "invalid_json"),
    ("json not an object", {"json": [1, 2]}, 400, "invalid_json"),
    ("image not a string", {"json": {"image": 42}}, 400, "invalid_image_field"),
    ("invalid base64", {"json": {"image": "data:image/png;base64,@@@not-base64@@@"}}, 400, "invalid_base64"),
    ("non-base64 data url", {"json": {"image": "data:image/png,abc"}}, 400, "invalid_base64"),
    (
        "not an image",
        {"json": {"image": base64.b64encode(b"hello, not an image").decode()}},
        415,
        "not_an_image",
    ),
    ("raw text as image", {"data": b"GIF89a-broken", "content_type": "image/gif"}, 415, "not_an_image"),
    ("empty raw body", {"data": b"", "content_type": "image/png"}, 400, "empty_body"),
    ("ragged array", {"json": {"image": "[[1, 2], [3]]"}}, 400, "invalid_array"),
    ("array out of range", {"json": {"image": "[[1, 300]]"}}, 400, "invalid_array"),
    ("array bad shape", {"json": {"image": "[1, 2, 3]"}}, 400, "invalid_array"),
    ("array bad json", {"json": {"image": "[[1, 2"}}, 400, "invalid_array"),
    ("wrong multipart field", {"data": {"photo": (io.BytesIO(b"x"), "x.png")}}, 400, "missing_image"),
    ("empty upload", {"data": {"image": (io.BytesIO(b""), "x.png")}}, 400, "empty_image"),
    ("no body at all", {}, 400, "empty_body"),
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


def test_oversized_base64_field_is_413(app, client):
    app.config["MAX_IMAGE_BYTES"] = 2048
    big = base64.b64encode(b"\x89PNG" + bytes(4096)).decode()
    r = client.post("/api/_echo", json={"image": big})
    assert r.status_code == 413 and r.get_json()["code"] == "payload_too_large"


def _png(mode: str, **save) -> bytes:
    """A 24x16 PNG in a Pillow mode, with a gradient, a dark square and (where it can) transparency."""
    rng = np.random.default_rng(7)
    rgba = rng.integers(0, 256, (16, 24, 4), dtype=np.uint8)
    rgba[..., 3] = np.where(np.arange(24) < 12, 255, 90)[None, :]
    img = Image.fromarray(rgba, "RGBA")
    img = img.convert("I;16") if mode == "I;16" else img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, format="PNG", **save)
    return buf.getvalue()


def _cv2_png16(channels: int) -> bytes:
    import cv2

    arr = np.random.default_rng(3).integers(0, 65536, (16, 24, channels), dtype=np.uint16)
    return cv2.imencode(".png", arr)[1].tobytes()


# (name, PNG bytes, whether libspng decodes it: 8-bit gray/RGB/RGBA without tRNS)
PNG_LAYOUTS = [
    ("gray", _png("L"), True),
    ("rgb", _png("RGB"), True),
    ("rgba", _png("RGBA"), True),
    ("rgba interlaced", _png("RGBA", interlace=1), True),
    ("gray+alpha", _png("LA"), False),
    ("palette", _png("P"), False),
    ("rgb with tRNS", _png("RGB", transparency=(0, 0, 0)), False),
    ("gray 16-bit", _png("I;16"), False),
    ("rgb 16-bit", _cv2_png16(3), False),
    ("rgba 16-bit", _cv2_png16(4), False),
]


@pytest.mark.parametrize("name,data,fast", PNG_LAYOUTS, ids=[c[0] for c in PNG_LAYOUTS])
def test_every_png_layout_decodes_as_opencv_does(app, name, data, fast):
    import cv2

    from blueprints.image_input import InputImage, decode_bytes

    with app.test_request_context():
        image = decode_bytes(data, source="raw")
    assert (image.order == "RGB") is fast, name  # the libspng path is taken exactly where it is safe
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels.dtype != np.uint8:
        pixels = cv2.convertScaleAbs(pixels, alpha=255.0 / 65535)
    reference = InputImage(pixels=pixels, format="PNG", source="raw")
    for view in ("gray", "bgr", "rgb"):
        assert np.array_equal(getattr(image, view)(), getattr(reference, view)()), (name, view)


def test_a_truncated_png_is_415_not_500(client):
    data = _png("RGBA")
    r = client.post("/api/_echo", data=data[: len(data) * 2 // 3], content_type="image/png")
    assert r.status_code == 415 and r.get_json()["code"] == "not_an_image"
