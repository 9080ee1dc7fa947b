"""Decode an image from bytes, base64 or a legacy nested array into an `InputImage`, with no Flask.

Limits are arguments (the HTTP layer passes its settings); every bad input raises
`ModelInputError` with the status and code the API answers: 400 bad base64, JSON or array, 413 over
a byte or pixel limit or too costly to decode, 415 not an image in a taken format. Everything a file
declares (models.image_headers) and a legacy array's shape are checked before anything is decoded
or built from them; JSON (a legacy array's text, and request bodies through `parse_json`) is read
with its nesting bounded and its numbers finite.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import pyspng
from PIL import Image, UnidentifiedImageError

from models.image_headers import check_pixels, read_declared
from models.runtime import InputMode, ModelInputError

DATA_URL = re.compile(r"^data:(?P<mime>[\w.+/-]*)(?P<params>(;[^,;]*)*?)(?P<b64>;base64)?,", re.I)
_WHITESPACE = re.compile(r"\s+")
_BASE64_WHITESPACE = (" ", "\n", "\r", "\t", "\f", "\v")

# Nesting a JSON body or legacy array may have: a legacy array is 3 deep inside a 1-deep object.
# Python's parser recurses once per level, so 100,000 brackets would end in a RecursionError.
JSON_MAX_DEPTH = 32
# A legacy array's longest side: what PNG (libpng's 1,000,000 user limit), JPEG (65,535) and the
# thumbnails can all hold, since an array is stored as PNG.
MAX_ARRAY_SIDE = 65_535
# A JSON string (escapes included) and the brackets outside strings, for the nesting check.
_JSON_STRING = re.compile(r'"[^"\\]*+(?:\\.[^"\\]*+)*+"')
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
_INNERMOST = re.compile(r"\[\]|\{\}")


def limit_pillow(max_pixels: int) -> None:
    """Set Pillow's own bomb limit (process-wide) to the service's pixel limit.

    The service checks every declared size itself first (models.image_headers), so Pillow's check
    (an error past twice its limit) is the second line, for anything that opens images with Pillow
    (thumbnails, EXIF) as well as the decoding here.
    """
    Image.MAX_IMAGE_PIXELS = max_pixels


def parse_json(text: str | bytes, *, max_depth: int = JSON_MAX_DEPTH) -> Any:
    """Parse JSON with its nesting bounded before parsing and only finite numbers (400 invalid_json)."""
    if isinstance(text, bytes | bytearray):
        try:
            text = text.decode(json.detect_encoding(text))
        except (UnicodeDecodeError, LookupError):
            raise _invalid_json("is not UTF-8 text") from None
    if not _nesting_within(text, max_depth):
        raise _invalid_json(f"is nested more than {max_depth} levels deep")
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except _NotFinite:
        raise _invalid_json("has a number that is not finite (NaN, Infinity or beyond 1e308)") from None
    except (ValueError, RecursionError):
        raise _invalid_json("cannot be parsed") from None


class _NotFinite(ValueError):
    pass


def _no_constant(name: str) -> float:
    raise _NotFinite(name)


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise _NotFinite(text)
    return number


def _invalid_json(why: str) -> ModelInputError:
    return ModelInputError(f"The JSON {why}.", "invalid_json")


def _nesting_within(text: str, limit: int) -> bool:
    """Say whether JSON text nests at most `limit` levels, without parsing it (linear, in C)."""
    if text.count("[") + text.count("{") <= limit:  # cannot be deeper: most bodies stop here
        return True
    brackets = _NOT_BRACKETS.sub("", _JSON_STRING.sub("", text) if '"' in text else text)
    if re.search(rf"[\[{{]{{{limit + 1}}}", brackets):  # more openers in a row than levels allowed
        return False
    for _ in range(limit):  # each pass removes the innermost level
        brackets = _INNERMOST.sub("", brackets)
        if not brackets:
            return True
    return False  # deeper than the limit, or brackets that do not pair up (invalid JSON anyway)


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


def rgb_on_white(img: Image.Image) -> Image.Image:
    """Return a Pillow image as RGB, transparency composited on white (thumbnails, training)."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        flat = Image.new("RGB", rgba.size, "white")
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return img.convert("RGB")


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
            nested = parse_json(text)
        except ModelInputError as exc:
            raise ModelInputError(
                f"The field '{name}' looks like a nested array, but its JSON {exc.message.removeprefix('The JSON ')}",
                "invalid_array",
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
    if len(text.rstrip("=")) * 3 // 4 > max_bytes:  # the decoded length, padding aside
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


def decode_bytes(
    data: bytes, *, source: str, filename: str | None = None, max_bytes: int, max_pixels: int
) -> InputImage:
    """Decode encoded image bytes, checking every declared size and cost before decoding."""
    if len(data) > max_bytes:
        raise too_large(max_bytes)
    declared = read_declared(data, max_pixels=max_pixels)  # 413 / 415 before any pixel
    fmt = declared.format
    if declared.plain_png:
        try:
            # libspng: about a third less CPU than OpenCV's libpng on canvas drawings (bench/).
            return InputImage(
                pixels=pyspng.load(data), format=fmt, source=source, data=data, filename=filename, order="RGB"
            )
        except RuntimeError:  # corrupt or truncated: OpenCV and Pillow decide what is left
            pass
    try:
        # Only the plugin of the format found: Pillow never guesses at another decoder.
        header = Image.open(io.BytesIO(data), formats=[fmt])
        width, height = header.size
    except Image.DecompressionBombError:
        raise ModelInputError(
            f"The image is over the {max_pixels} pixel limit.",
            "image_too_large",
            413,
            limit_pixels=max_pixels,
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise ModelInputError(f"The {fmt} file cannot be read.", "not_an_image", 415) from None
    check_pixels(width, height, max_pixels)  # what Pillow makes of it agrees with the headers
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None or pixels.ndim not in (2, 3):
        pixels = _decode_with_pillow(header)
    elif pixels.dtype != np.uint8:
        if pixels.dtype.kind != "u":  # 16-bit is scaled; float or signed samples are refused above
            raise ModelInputError(f"The {fmt} file's samples are not unsigned integers.", "not_an_image", 415)
        pixels = cv2.convertScaleAbs(pixels, alpha=255.0 / np.iinfo(pixels.dtype).max)
    if fmt in ("JPEG", "TIFF", "WEBP"):
        pixels = _apply_orientation(pixels, header)
    return InputImage(pixels=pixels, format=fmt, source=source, data=data, filename=filename)


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
    height, width = _array_sides(nested)
    if height > MAX_ARRAY_SIDE or width > MAX_ARRAY_SIDE:
        raise ModelInputError(
            f"The nested array is {height} rows of {width}; each side may be at most {MAX_ARRAY_SIDE}.",
            "invalid_array",
        )
    check_pixels(width, height, max_pixels)  # before an array is built from it
    try:
        arr = np.asarray(nested)
    except (ValueError, OverflowError):
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
    if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 255:
        raise ModelInputError("The nested array must hold numbers from 0 to 255.", "invalid_array")
    pixels = np.ascontiguousarray(arr.astype(np.uint8))
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    return InputImage(pixels=pixels, format="ARRAY", source="legacy_array")


def _array_sides(nested: Any) -> tuple[int, int]:
    """Return (rows, first row's length) of a nested list, read without building anything."""
    if not isinstance(nested, list | tuple) or not nested:
        raise ModelInputError(
            "The nested array must be a list of rows: [height, width] or [height, width, 3].", "invalid_array"
        )
    first = nested[0]
    return len(nested), len(first) if isinstance(first, list | tuple) else 1
