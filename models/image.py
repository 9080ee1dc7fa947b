"""Decode an image from bytes, base64 or a legacy nested array into an `InputImage`, with no Flask.

Limits are arguments (the HTTP layer passes its settings); every bad input raises
`ModelInputError` with the status and code the API answers: 400 bad base64 or array, 413 over
a byte or pixel limit (checked before decoding), 415 not an image.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import pyspng
from PIL import Image, UnidentifiedImageError

from models.runtime import InputMode, ModelInputError

DATA_URL = re.compile(r"^data:(?P<mime>[\w.+/-]*)(?P<params>(;[^,;]*)*?)(?P<b64>;base64)?,", re.I)
_WHITESPACE = re.compile(r"\s+")
_BASE64_WHITESPACE = (" ", "\n", "\r", "\t", "\f", "\v")

# Pillow only reads headers here (to learn format and size before decoding); its own
# bomb check would raise before ours can answer 413, so the limit is enforced by us.
Image.MAX_IMAGE_PIXELS = None

# PNG modes libspng decodes to the same pixels OpenCV would (8-bit gray, RGB, RGBA); palette,
# gray+alpha, 16-bit and tRNS transparency take the OpenCV/Pillow path.
SPNG_MODES = ("L", "RGB", "RGBA")


def to_gray(image: np.ndarray, order: str = "BGR") -> np.ndarray:
    """Return a 2-D uint8 gray image from a gray, colour or colour+alpha array (alpha ignored)."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3 and image.shape[2] in (3, 4):
        code = cv2.COLOR_BGR2GRAY if order == "BGR" else cv2.COLOR_RGB2GRAY
        image = cv2.cvtColor(np.ascontiguousarray(image[:, :, :3]), code)
    if image.ndim != 2:
        raise ModelInputError(f"Expected a gray or colour image, got an array of shape {list(image.shape)}.")
    return image


@dataclass
class InputImage:
    """A decoded image. `pixels` is as decoded: gray or colour (+ alpha), uint8.

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
    def has_alpha(self) -> bool:
        return self.pixels.ndim == 3 and self.pixels.shape[2] == 4

    def _color(self, order: str) -> np.ndarray:
        """Return the image as 3-channel uint8 in `order`, transparency composited on white."""
        if order not in self._cache:
            px = self.pixels
            if px.ndim == 2:
                out = cv2.cvtColor(px, cv2.COLOR_GRAY2BGR)  # gray: both orders are the same
            else:
                out = on_white(px[:, :, :3], px[:, :, 3:4]) if px.shape[2] == 4 else px
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
            if px.ndim == 3 and px.shape[2] == 4:
                # Colour to gray on the whole array: same weights, and no copy of a strided slice.
                code = cv2.COLOR_BGRA2GRAY if self.order == "BGR" else cv2.COLOR_RGBA2GRAY
                out = on_white(cv2.cvtColor(px, code), px[:, :, 3])
            else:
                out = to_gray(px, self.order)
            self._cache["gray"] = out
        return self._cache["gray"]

    def pixels_as(self, mode: InputMode) -> np.ndarray:
        """Return the pixels as a model takes them (its `input_mode`)."""
        if mode == "gray":
            return self.gray()
        if mode == "rgb":
            return self.rgb()
        if mode == "bgr":
            return self.bgr()
        raise ValueError(f"unknown input mode {mode!r}; expected gray, rgb or bgr")

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


def on_white(color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Composite color (with alpha 0..255) over white: 255 - (255 - color) * alpha / 255, rounded."""
    alpha = np.ascontiguousarray(alpha.reshape(alpha.shape[:2]))
    if color.ndim == 3:
        alpha = cv2.merge([alpha] * color.shape[2])
    # OpenCV's saturating uint8 multiply rounds as the integer formula (color * a + 255 * (255 - a)
    # + 127) // 255 does, bit for bit, at a quarter of the cost of uint16 NumPy temporaries.
    return cv2.bitwise_not(cv2.multiply(cv2.bitwise_not(color), alpha, scale=1 / 255))


def decode_value(value: Any, name: str, *, max_bytes: int, max_pixels: int) -> InputImage:
    """Decode a JSON/form field: data URL, plain base64, or a legacy nested array."""
    if isinstance(value, list):
        return decode_array(value, max_pixels=max_pixels)
    if not isinstance(value, str):
        raise ModelInputError(
            f"The field '{name}' must be a string (data URL or base64).", "invalid_image_field"
        )
    text = value.strip()
    if not text:
        raise ModelInputError(f"The field '{name}' is empty.", "missing_image")
    if text[0] == "[":
        try:
            nested = json.loads(text)
        except ValueError:
            raise ModelInputError(
                f"The field '{name}' looks like an array but is not valid JSON.", "invalid_array"
            ) from None
        return decode_array(nested, max_pixels=max_pixels)
    source = "base64"
    match = DATA_URL.match(text)
    if match:
        if not match.group("b64"):
            raise ModelInputError("Only base64 data URLs are accepted (';base64,').", "invalid_base64")
        text = text[match.end() :]
        source = "data_url"
    data = decode_base64(text, max_bytes=max_bytes)
    return decode_bytes(data, source=source, max_bytes=max_bytes, max_pixels=max_pixels)


def decode_base64(text: str, *, max_bytes: int) -> bytes:
    """Decode standard or URL-safe base64, tolerating whitespace and missing padding."""
    if any(c in text for c in _BASE64_WHITESPACE):
        # Line-wrapped base64 (76 columns, MIME style). Most clients send one line, and these
        # substring scans cost microseconds where the regex alone took a tenth of a millisecond.
        text = _WHITESPACE.sub("", text)
    if len(text) * 3 // 4 > max_bytes:
        raise too_large(max_bytes)
    if "-" in text or "_" in text:
        text = text.replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ModelInputError("The image is not valid base64.", "invalid_base64") from None
    if not data:
        raise ModelInputError("The image field decodes to nothing.", "missing_image")
    return data


def too_large(limit: int) -> ModelInputError:
    """Return the 413 error for an image over the byte limit."""
    return ModelInputError(
        f"The image is larger than the {limit} byte limit.", "payload_too_large", 413, limit_bytes=limit
    )


def _check_pixels(width: int, height: int, limit: int) -> None:
    if width * height > limit:
        raise ModelInputError(
            f"The image is {width}x{height} pixels, over the {limit} pixel limit.",
            "image_too_large",
            413,
            limit_pixels=limit,
        )


def decode_bytes(
    data: bytes, *, source: str, filename: str | None = None, max_bytes: int, max_pixels: int
) -> InputImage:
    """Decode encoded image bytes, checking byte and pixel limits before decoding."""
    if len(data) > max_bytes:
        raise too_large(max_bytes)
    try:
        header = Image.open(io.BytesIO(data))
        fmt = header.format or "UNKNOWN"
        width, height = header.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise ModelInputError(
            "The data is not an image in a supported format (PNG, JPEG, GIF, BMP, WebP, TIFF).",
            "not_an_image",
            415,
        ) from None
    _check_pixels(width, height, max_pixels)
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
        raise ModelInputError("The image data is truncated or corrupt.", "not_an_image", 415) from None
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


def decode_array(nested: Any, *, max_pixels: int) -> InputImage:
    """Decode the legacy format: a nested uint8 array, gray (H, W) or BGR (H, W, 3)."""
    try:
        arr = np.asarray(nested)
    except ValueError:
        raise ModelInputError(
            "The nested array is ragged: every row must have the same length.", "invalid_array"
        ) from None
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)) or arr.size == 0:
        raise ModelInputError(
            f"The nested array has shape {list(arr.shape)}; expected [height, width] or [height, width, 3].",
            "invalid_array",
        )
    if not np.issubdtype(arr.dtype, np.integer) and not np.issubdtype(arr.dtype, np.floating):
        raise ModelInputError("The nested array must hold numbers from 0 to 255.", "invalid_array")
    if arr.min() < 0 or arr.max() > 255:
        raise ModelInputError("The nested array must hold numbers from 0 to 255.", "invalid_array")
    _check_pixels(arr.shape[1], arr.shape[0], max_pixels)
    pixels = np.ascontiguousarray(arr.astype(np.uint8))
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    return InputImage(pixels=pixels, format="ARRAY", source="legacy_array")
