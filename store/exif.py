"""EXIF to JSON: tag names as keys, bytes as text or base64, rationals as floats, GPS in decimal degrees."""

from __future__ import annotations

import base64
import io
import logging
import math
from fractions import Fraction
from typing import Any

from PIL import ExifTags, Image, TiffImagePlugin

log = logging.getLogger(__name__)

# MakerNote blobs can be large and are opaque; past this size only their length is kept.
MAX_EXIF_BLOB = 64 * 1024

_IFD_POINTERS = {0x8769, 0x8825, 0xA005}  # Exif, GPS and Interop sub-IFD offsets, not data
_USER_COMMENT = 0x9286
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_exif(data: bytes) -> dict[str, Any] | None:
    """Return an image's EXIF as JSON-safe values by tag name, with GPS in decimal degrees."""
    if data.startswith(PNG_SIGNATURE) and b"eXIf" not in data:
        # Canvas PNGs carry no EXIF, and Pillow would decode every pixel looking for a late chunk.
        return None
    try:
        with Image.open(io.BytesIO(data)) as img:
            exif = img.getexif()
            if not exif:
                return None
            out: dict[str, Any] = {}
            for tag, value in exif.items():
                if tag not in _IFD_POINTERS:
                    out[ExifTags.TAGS.get(tag, f"0x{tag:04x}")] = _exif_value(tag, value)
            for tag, value in exif.get_ifd(ExifTags.IFD.Exif).items():
                out[ExifTags.TAGS.get(tag, f"0x{tag:04x}")] = _exif_value(tag, value)
            try:
                interop = exif.get_ifd(ExifTags.IFD.Interop)
            except KeyError:  # Pillow raises when the Exif IFD has no Interop pointer
                interop = {}
            if interop:
                out["Interop"] = {
                    ExifTags.TAGS.get(t, f"0x{t:04x}"): _exif_value(t, v) for t, v in interop.items()
                }
            gps_ifd = exif.get_ifd(ExifTags.IFD.GPSInfo)
            if gps_ifd:
                out["GPSInfo"] = {
                    ExifTags.GPSTAGS.get(t, f"0x{t:04x}"): _gps_value(t, v) for t, v in gps_ifd.items()
                }
                position = gps_decimal(gps_ifd)
                if position:
                    out["GPS"] = position
            return out or None
    except Exception as exc:  # a broken EXIF block must not stop the image from being kept
        log.warning("unreadable EXIF: %s", exc)
        return {"error": f"unreadable EXIF: {type(exc).__name__}: {exc}"}


def _exif_value(tag: int, value: Any) -> Any:
    if tag == _USER_COMMENT and isinstance(value, bytes):
        return _user_comment(value)
    return jsonable(value)


def _gps_value(tag: int, value: Any) -> Any:
    # GPSVersionID and GPSAltitudeRef are BYTE numbers, which Pillow hands back as bytes.
    if tag in (0, 5) and isinstance(value, bytes):
        return value[0] if tag == 5 and len(value) == 1 else list(value)
    return jsonable(value)


def jsonable(value: Any) -> Any:
    """Turn an EXIF value into JSON: bytes as text where valid, else {"base64": ...}."""
    if isinstance(value, bytes):
        return decode_bytes(value)
    if isinstance(value, str):
        text = value.rstrip("\x00")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates from a broken file
            return decode_bytes(text.encode("utf-8", "surrogateescape"))
        return text
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, TiffImagePlugin.IFDRational | Fraction | float):
        return finite(value)
    if isinstance(value, tuple | list):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return str(value)


def finite(value: Any) -> float | None:
    """Return a number as a finite float, or None (x/0, NaN, infinity, not a number)."""
    try:
        number = float(value)
    except (ZeroDivisionError, ValueError, TypeError):
        return None
    return number if math.isfinite(number) else None


def decode_bytes(raw: bytes) -> str | dict[str, Any]:
    """Decode bytes as UTF-8 text when they are printable text, else base64."""
    stripped = raw.rstrip(b"\x00")
    try:
        text = stripped.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text and all(c.isprintable() or c in "\t\n\r" for c in text):
        return text
    if len(raw) > MAX_EXIF_BLOB:
        return {"base64": None, "omitted_bytes": len(raw)}
    return {"base64": base64.b64encode(raw).decode("ascii")}


def _user_comment(raw: bytes) -> str | dict[str, Any]:
    # UserComment starts with an 8-byte character code (EXIF 2.3, 4.6.5).
    code, body = raw[:8], raw[8:]
    if code.startswith(b"UNICODE"):
        for encoding in ("utf-16-be", "utf-16-le"):
            try:
                text = body.decode(encoding).rstrip("\x00")
            except UnicodeDecodeError:
                continue
            if text.isprintable():
                return text
        return decode_bytes(body)
    if code.startswith((b"ASCII", b"\x00" * 8)) and len(raw) >= 8:
        decoded = decode_bytes(body)
        return decoded.strip() if isinstance(decoded, str) else decoded
    return decode_bytes(raw)


def gps_decimal(gps: dict[int, Any]) -> dict[str, float | None] | None:
    """Return {"latitude", "longitude", "altitude"} in decimal degrees (and metres) from a GPS IFD."""
    lat = _degrees(gps.get(2), gps.get(1), "S")
    lon = _degrees(gps.get(4), gps.get(3), "W")
    if lat is None or lon is None:
        return None
    altitude = finite(gps[6]) if 6 in gps else None
    if altitude is not None and gps.get(5) in (1, b"\x01"):
        altitude = -altitude  # AltitudeRef 1: below sea level
    return {"latitude": round(lat, 7), "longitude": round(lon, 7), "altitude": altitude}


def _degrees(dms: Any, ref: Any, negative: str) -> float | None:
    if dms is None:
        return None
    try:
        parts = [float(p) for p in (dms if isinstance(dms, tuple | list) else (dms,))]
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    parts = (parts + [0.0, 0.0])[:3]
    value = parts[0] + parts[1] / 60 + parts[2] / 3600
    if not math.isfinite(value):
        return None
    if isinstance(ref, bytes):
        ref = ref.decode("ascii", "replace")
    if isinstance(ref, str) and ref.strip("\x00 ").upper() == negative:
        value = -value
    return value
