"""The one image-input path of every endpoint: find the image in a request and decode it.

Accepted: a data URL, plain base64, a multipart upload (field `image` or `file`), raw bytes
with an `image/*` Content-Type, and the original OCR service's legacy JSON: a JSON string
(or list) of a nested uint8 array, gray (H, W) or BGR (H, W, 3).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import pyspng
from flask import current_app, g, request
from PIL import Image, UnidentifiedImageError

from blueprints.errors import api_error

JSON_FIELDS = ("image", "base64_drawing", "file")
FILE_FIELDS = ("image", "file")
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
DATA_URL = re.compile(r"^data:(?P<mime>[\w.+/-]*)(?P<params>(;[^,;]*)*?)(?P<b64>;base64)?,", re.I)
_WHITESPACE = re.compile(r"\s+")
_BASE64_WHITESPACE = (" ", "\n", "\r", "\t", "\f", "\v")

# Pillow only reads headers here (to learn format and size before decoding); its own
# bomb check would raise before ours can answer 413, so the limit is enforced by us.
Image.MAX_IMAGE_PIXELS = None

MIME_BY_FORMAT = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "GIF": "image/gif",
    "BMP": "image/bmp",
    "WEBP": "image/webp",
    "TIFF": "image/tiff",
    "ARRAY": "image/png",
}


# PNG modes libspng decodes to the same pixels OpenCV would (8-bit gray, RGB, RGBA); palette,
# gray+alpha, 16-bit and tRNS transparency take the OpenCV/Pillow path.
SPNG_MODES = ("L", "RGB", "RGBA")


@dataclass
class InputImage:
    """A decoded request image. `pixels` is as decoded: gray or colour (+ alpha), uint8.

    `order` is the colour channels' order in `pixels`: "BGR" from OpenCV, "RGB" from libspng.
    The accessors below give every consumer the layout it asks for, whatever the decoder.
    """

    pixels: np.ndarray
    format: str
    source: str
    data: bytes | None = None
    filename: str | None = None
    order: str = "BGR"
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def mime(self) -> str:
        return MIME_BY_FORMAT.get(self.format, "application/octet-stream")

    @property
    def has_alpha(self) -> bool:
        return self.pixels.ndim == 3 and self.pixels.shape[2] == 4

    def _color(self, order: str) -> np.ndarray:
        """Return the image as 3-channel uint8 in `order`, transparency composited on white."""
        if order not in self._cache:
            px = self.pixels
            if px.ndim == 2:
                out = cv2.cvtColor(px, cv2.COLOR_GRAY2BGR)  # gray: both orders are the same
            else:
                out = _on_white(px[:, :, :3], px[:, :, 3:4]) if px.shape[2] == 4 else px
                if order != self.order:
                    out = cv2.cvtColor(out, cv2.COLOR_BGR2RGB)  # the same swap either way
            self._cache[order] = out
        return self._cache[order]

    def bgr(self) -> np.ndarray:
        """Return the image as BGR uint8, transparency composited on white."""
        return self._color("BGR")

    def rgb(self) -> np.ndarray:
        """Return the image as RGB uint8, transparency composited on white."""
        return self._color("RGB")

    def gray(self) -> np.ndarray:
        """Return the image as 8-bit gray, transparency composited on white."""
        if "gray" not in self._cache:
            px = self.pixels
            if px.ndim == 2:
                out = px
            elif px.shape[2] == 4:
                # Colour to gray on the whole array: same weights, and no copy of a strided slice.
                code = cv2.COLOR_BGRA2GRAY if self.order == "BGR" else cv2.COLOR_RGBA2GRAY
                out = _on_white(cv2.cvtColor(px, code), px[:, :, 3])
            else:
                out = cv2.cvtColor(px, cv2.COLOR_BGR2GRAY if self.order == "BGR" else cv2.COLOR_RGB2GRAY)
            self._cache["gray"] = out
        return self._cache["gray"]

    def pil(self) -> Image.Image:
        """Return an RGB Pillow image, transparency composited on white."""
        return Image.fromarray(self.rgb())

    def encoded(self) -> bytes:
        """Return encoded bytes for storage: the original upload, or PNG for a legacy array."""
        if self.data is None:
            px = self.pixels
            if self.order != "BGR" and px.ndim == 3:
                px = cv2.cvtColor(px, cv2.COLOR_RGBA2BGRA if px.shape[2] == 4 else cv2.COLOR_RGB2BGR)
            ok, buf = cv2.imencode(".png", px)
            if not ok:  # pragma: no cover - PNG encoding of a uint8 array does not fail
                raise ValueError("cannot encode image as PNG")
            self.data = buf.tobytes()
        return self.data


def _on_white(color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Composite color (with alpha 0..255) over white: 255 - (255 - color) * alpha / 255, rounded."""
    alpha = np.ascontiguousarray(alpha.reshape(alpha.shape[:2]))
    if color.ndim == 3:
        alpha = cv2.merge([alpha] * color.shape[2])
    # OpenCV's saturating uint8 multiply rounds as the integer formula (color * a + 255 * (255 - a)
    # + 127) // 255 does, bit for bit, at a quarter of the cost of uint16 NumPy temporaries.
    return cv2.bitwise_not(cv2.multiply(cv2.bitwise_not(color), alpha, scale=1 / 255))


def request_options() -> dict[str, Any]:
    """Return the request's non-image options: JSON body fields, else form and query values."""
    body = g.get("json_body")  # load_image keeps the body it parsed: no second parse
    if body is None and request.is_json:
        body = request.get_json(silent=True)
    options: dict[str, Any] = dict(request.args.items())
    if isinstance(body, dict):
        options.update({k: v for k, v in body.items() if k not in JSON_FIELDS})
    else:
        options.update({k: v for k, v in request.form.items() if k not in JSON_FIELDS})
    return options


def load_image(fields: tuple[str, ...] = JSON_FIELDS) -> InputImage:
    """Find and decode the request's image, or stop the request with a 4xx JSON error."""
    max_bytes = current_app.config["MAX_IMAGE_BYTES"]
    mimetype = request.mimetype or ""
    # Only a form can carry files; asking a JSON request for them costs a form parse for nothing.
    if mimetype in FORM_TYPES:
        for name in FILE_FIELDS:
            upload = request.files.get(name)
            if upload is not None:
                data = upload.read(max_bytes + 1)
                if not data:
                    api_error(400, "empty_image", f"The uploaded file '{name}' is empty.")
                return decode_bytes(data, source="multipart", filename=upload.filename)
        if request.files:
            api_error(
                400,
                "missing_image",
                f"No image found: upload the file in a multipart field named {' or '.join(FILE_FIELDS)}.",
                fields=list(request.files),
            )

    if mimetype.startswith("image/") or mimetype == "application/octet-stream":
        data = request.get_data(cache=True)
        if not data:
            api_error(400, "empty_body", "The request body is empty: send the image bytes.")
        return decode_bytes(data, source="raw")

    if request.is_json or mimetype in ("", "text/plain"):
        raw = request.get_data(cache=True)
        if not raw.strip():
            api_error(400, "empty_body", _missing_message(fields))
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            api_error(400, "invalid_json", "The request body is not valid JSON.")
        if not isinstance(body, dict):
            api_error(400, "invalid_json", "The JSON body must be an object with an image field.")
        g.json_body = body
        for name in fields:
            if name in body:
                return decode_value(body[name], name)
        api_error(400, "missing_image", _missing_message(fields), fields=sorted(body))

    for name in fields:
        if name in request.form:
            return decode_value(request.form[name], name)
    api_error(400, "missing_image", _missing_message(fields))


def _missing_message(fields: tuple[str, ...]) -> str:
    return (
        f"No image found: send JSON with a field {' or '.join(repr(f) for f in fields)} "
        "(data URL or base64), a multipart file 'image', or raw image bytes."
    )


def decode_value(value: Any, name: str) -> InputImage:
    """Decode a JSON/form field: data URL, plain base64, or a legacy nested array."""
    if isinstance(value, list):
        return decode_array(value)
    if not isinstance(value, str):
        api_error(400, "invalid_image_field", f"The field '{name}' must be a string (data URL or base64).")
    text = value.strip()
    if not text:
        api_error(400, "missing_image", f"The field '{name}' is empty.")
    if text[0] == "[":
        try:
            nested = json.loads(text)
        except ValueError:
            api_error(400, "invalid_array", f"The field '{name}' looks like an array but is not valid JSON.")
        return decode_array(nested)
    source = "base64"
    match = DATA_URL.match(text)
    if match:
        if not match.group("b64"):
            api_error(400, "invalid_base64", "Only base64 data URLs are accepted (';base64,').")
        text = text[match.end() :]
        source = "data_url"
    return decode_bytes(decode_base64(text), source=source)


def decode_base64(text: str) -> bytes:
    """Decode standard or URL-safe base64, tolerating whitespace and missing padding."""
    max_bytes = current_app.config["MAX_IMAGE_BYTES"]
    if any(c in text for c in _BASE64_WHITESPACE):
        # Line-wrapped base64 (76 columns, MIME style). Most clients send one line, and these
        # substring scans cost microseconds where the regex alone took a tenth of a millisecond.
        text = _WHITESPACE.sub("", text)
    if len(text) * 3 // 4 > max_bytes:
        _too_large(max_bytes)
    if "-" in text or "_" in text:
        text = text.replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        api_error(400, "invalid_base64", "The image is not valid base64.")
    if not data:
        api_error(400, "missing_image", "The image field decodes to nothing.")
    return data


def _too_large(limit: int) -> None:
    api_error(
        413, "payload_too_large", f"The image is larger than the {limit} byte limit.", limit_bytes=limit
    )


def _check_pixels(width: int, height: int) -> None:
    limit = current_app.config["MAX_IMAGE_PIXELS"]
    if width * height > limit:
        api_error(
            413,
            "image_too_large",
            f"The image is {width}x{height} pixels, over the {limit} pixel limit.",
            limit_pixels=limit,
        )


def decode_bytes(data: bytes, *, source: str, filename: str | None = None) -> InputImage:
    """Decode encoded image bytes, checking byte and pixel limits before decoding."""
    if len(data) > current_app.config["MAX_IMAGE_BYTES"]:
        _too_large(current_app.config["MAX_IMAGE_BYTES"])
    try:
        header = Image.open(io.BytesIO(data))
        fmt = header.format or "UNKNOWN"
        width, height = header.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        api_error(
            415,
            "not_an_image",
            "The data is not an image in a supported format (PNG, JPEG, GIF, BMP, WebP, TIFF).",
        )
    _check_pixels(width, height)
    if fmt == "PNG" and _spng_decodes(header):
        try:
            # libspng: about a third less CPU than OpenCV's libpng on canvas drawings (bench/).
            pixels = pyspng.load(data)
            return InputImage(
                pixels=pixels, format=fmt, source=source, data=data, filename=filename, order="RGB"
            )
        except RuntimeError:  # corrupt or truncated: OpenCV and Pillow decide what is left
            pass
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None or pixels.ndim not in (2, 3):
        pixels = _decode_with_pillow(header)
    elif pixels.dtype != np.uint8:
        pixels = cv2.convertScaleAbs(pixels, alpha=255.0 / np.iinfo(pixels.dtype).max)
    if fmt in ("JPEG", "TIFF", "WEBP"):
        pixels = _apply_orientation(pixels, header)
    return InputImage(pixels=pixels, format=fmt, source=source, data=data, filename=filename)


def _spng_decodes(header: Image.Image) -> bool:
    """Say whether a PNG is 8-bit gray, RGB or RGBA without tRNS, which libspng decodes as OpenCV does."""
    tile = header.tile[0] if header.tile else None
    return (
        header.mode in SPNG_MODES
        and tile is not None
        and tile.args == header.mode  # 16-bit data reads as e.g. "RGB;16B"
        and "transparency" not in header.info
    )


def _decode_with_pillow(header: Image.Image) -> np.ndarray:
    """Decode what OpenCV cannot (GIF, palette images) with Pillow, as BGR(A)."""
    try:
        img = header.convert("RGBA")
    except (OSError, ValueError, SyntaxError):
        api_error(415, "not_an_image", "The image data is truncated or corrupt.")
    return cv2.cvtColor(np.asarray(img), cv2.COLOR_RGBA2BGRA)


def _apply_orientation(pixels: np.ndarray, header: Image.Image) -> np.ndarray:
    """Rotate a photo as its EXIF orientation says, as browsers and viewers do."""
    try:
        orientation = header.getexif().get(0x0112, 1)
    except Exception:  # broken EXIF must not reject the photo
        return pixels
    ops = {
        2: lambda p: cv2.flip(p, 1),
        3: lambda p: cv2.rotate(p, cv2.ROTATE_180),
        4: lambda p: cv2.flip(p, 0),
        5: lambda p: cv2.flip(cv2.rotate(p, cv2.ROTATE_90_CLOCKWISE), 1),
        6: lambda p: cv2.rotate(p, cv2.ROTATE_90_CLOCKWISE),
        7: lambda p: cv2.flip(cv2.rotate(p, cv2.ROTATE_90_COUNTERCLOCKWISE), 1),
        8: lambda p: cv2.rotate(p, cv2.ROTATE_90_COUNTERCLOCKWISE),
    }
    op = ops.get(orientation)
    return op(pixels) if op else pixels


def decode_array(nested: Any) -> InputImage:
    """Decode the legacy format: a nested uint8 array, gray (H, W) or BGR (H, W, 3)."""
    try:
        arr = np.asarray(nested)
    except ValueError:
        api_error(400, "invalid_array", "The nested array is ragged: every row must have the same length.")
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)) or arr.size == 0:
        api_error(
            400,
            "invalid_array",
            f"The nested array has shape {list(arr.shape)}; expected [height, width] or [height, width, 3].",
        )
    if not np.issubdtype(arr.dtype, np.integer) and not np.issubdtype(arr.dtype, np.floating):
        api_error(400, "invalid_array", "The nested array must hold numbers from 0 to 255.")
    if arr.min() < 0 or arr.max() > 255:
        api_error(400, "invalid_array", "The nested array must hold numbers from 0 to 255.")
    _check_pixels(arr.shape[1], arr.shape[0])
    pixels = np.ascontiguousarray(arr.astype(np.uint8))
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    return InputImage(pixels=pixels, format="ARRAY", source="legacy_array")


def keep_image(
    image: InputImage,
    *,
    endpoint: str,
    model: str | None,
    prediction: str | None,
    confidence: float | None,
) -> None:
    """Hand a received image and its prediction to the store; never fails the request."""
    if not current_app.config["SAVE_IMAGES"]:
        return
    store = current_app.extensions.get("store")
    if store is None:
        return
    try:
        store.submit(image, endpoint=endpoint, model=model, prediction=prediction, confidence=confidence)
    except Exception:  # saving is best effort: the prediction is what the client asked for
        logging.getLogger(__name__).exception("could not queue image from %s for saving", endpoint)
