"""EXIF to JSON: tag names as keys, bytes as text or base64, rationals as floats, GPS in decimal degrees.

What is kept is capped, because a small file can declare a great deal: 300 tags pointing at one
60 KB string in a 64 KB PNG are 18 MB of values. Before Pillow reads the values, the block's
layout is checked (entries, and the bytes they declare, which overlap in such a file); then at
most MAX_EXIF_TAGS values are kept, strings cut at MAX_EXIF_TEXT characters, lists at
MAX_EXIF_ITEMS items, blobs over MAX_EXIF_BLOB bytes by their length only, and the whole at
MAX_EXIF_JSON bytes of JSON. `"omitted"` says what was left out.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import struct
from fractions import Fraction
from typing import Any

from PIL import ExifTags, Image, TiffImagePlugin

log = logging.getLogger(__name__)

# Opaque blobs (MakerNote) past this size keep only their length.
MAX_EXIF_BLOB = 4 * 1024
MAX_EXIF_TEXT = 1024  # characters of one string
MAX_EXIF_ITEMS = 64  # items of one list
MAX_EXIF_TAGS = 256  # values kept, sub-IFDs included
MAX_EXIF_JSON = 64 * 1024  # bytes of the JSON kept per image
# The raw block: a camera's EXIF fits a JPEG segment (64 KB); entries whose values, added up,
# exceed twice the block (plus a margin for a miscounted tag) point at the same bytes many times.
MAX_EXIF_SOURCE = 1024 * 1024
MAX_EXIF_ENTRIES = 2000
_TYPE_SIZES = {
    1: 1,
    2: 1,
    3: 2,
    4: 4,
    5: 8,
    6: 1,
    7: 1,
    8: 2,
    9: 4,
    10: 8,
    11: 4,
    12: 8,
    13: 4,
    16: 8,
    17: 8,
    18: 8,
}

_IFD_POINTERS = {0x8769, 0x8825, 0xA005}  # Exif, GPS and Interop sub-IFD offsets, not data
_USER_COMMENT = 0x9286
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_exif(data: bytes) -> dict[str, Any] | None:
    """Return an image's EXIF as JSON-safe values by tag name (capped), with GPS in decimal degrees."""
    if data.startswith(PNG_SIGNATURE) and b"eXIf" not in data:
        # Canvas PNGs carry no EXIF, and Pillow would decode every pixel looking for a late chunk.
        return None
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format == "PNG" and "exif" not in img.info:
                img.load()  # an eXIf chunk after the pixels is read with them (as getexif() does)
            refused = layout_problem(img.info.get("exif"))
            if refused:
                log.warning("EXIF not kept: %s", refused)
                return {"omitted": f"EXIF not kept: {refused}"}
            exif = img.getexif()
            if not exif:
                return None
            return _capped(exif)
    except Exception as exc:  # a broken EXIF block must not stop the image from being kept
        log.warning("unreadable EXIF: %s", exc)
        return {"error": f"unreadable EXIF: {type(exc).__name__}: {str(exc)[:200]}"}


def layout_problem(raw: bytes | None) -> str | None:
    """Say why a raw EXIF block would cost too much to read (too large, too many entries, values
    declared many times over), or None when it may be read."""
    if not raw:
        return None
    if len(raw) > MAX_EXIF_SOURCE:
        return f"the block is {len(raw)} bytes, over {MAX_EXIF_SOURCE}"
    tiff = raw[6:] if raw.startswith(b"Exif\x00\x00") else raw
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return None  # not TIFF-shaped: Pillow refuses it cheaply
    pending = [struct.unpack(order + "L", tiff[4:8])[0]]
    seen: set[int] = set()
    entries = declared = 0
    while pending:
        offset = pending.pop()
        if offset in seen or offset + 2 > len(tiff):
            continue
        seen.add(offset)
        (count,) = struct.unpack(order + "H", tiff[offset : offset + 2])
        entries += count
        if entries > MAX_EXIF_ENTRIES:
            return f"over {MAX_EXIF_ENTRIES} entries"
        for start in range(offset + 2, min(offset + 2 + 12 * count, len(tiff) - 11), 12):
            tag, kind, number, value = struct.unpack(order + "HHLL", tiff[start : start + 12])
            size = _TYPE_SIZES.get(kind, 1) * number
            if size > 4:
                declared += min(size, len(tiff))  # Pillow skips a value that runs past the block
            if tag in _IFD_POINTERS:
                pending.append(value)
    limit = 2 * len(tiff) + 64 * 1024
    if declared > limit:
        return f"its {entries} entries declare {declared} bytes of values in a {len(tiff)}-byte block"
    return None


class _Budget:
    """What is left of the caps on the kept EXIF: tags and JSON bytes."""

    def __init__(self) -> None:
        self.tags = MAX_EXIF_TAGS
        self.size = MAX_EXIF_JSON
        self.omitted = 0

    def take(self, value: Any) -> bool:
        """Spend one tag and the value's JSON size; False (and counted) when it does not fit."""
        size = len(json.dumps(value, ensure_ascii=False, allow_nan=False, default=str)) + 24
        if self.tags < 1 or size > self.size:
            self.omitted += 1
            return False
        self.tags -= 1
        self.size -= size
        return True


def _capped(exif: Image.Exif) -> dict[str, Any] | None:
    """Build the kept EXIF: GPS first, then the tags in order, within the budget."""
    budget = _Budget()
    out: dict[str, Any] = {}
    gps_ifd = exif.get_ifd(ExifTags.IFD.GPSInfo)
    if gps_ifd:
        position = gps_decimal(gps_ifd)
        if position and budget.take(position):
            out["GPS"] = position
        gps = _section(gps_ifd.items(), ExifTags.GPSTAGS, _gps_value, budget)
        if gps:
            out["GPSInfo"] = gps
    plain = [(t, v) for t, v in exif.items() if t not in _IFD_POINTERS]
    out.update(
        _section(plain + list(exif.get_ifd(ExifTags.IFD.Exif).items()), ExifTags.TAGS, _exif_value, budget)
    )
    try:
        interop = exif.get_ifd(ExifTags.IFD.Interop)
    except KeyError:  # Pillow raises when the Exif IFD has no Interop pointer
        interop = {}
    if interop:
        section = _section(interop.items(), ExifTags.TAGS, _exif_value, budget)
        if section:
            out["Interop"] = section
    if budget.omitted:
        out["omitted"] = (
            f"{budget.omitted} tags over the limits ({MAX_EXIF_TAGS} tags, {MAX_EXIF_JSON} bytes)"
        )
    return out or None


def _section(items, names: dict[int, str], convert, budget: _Budget) -> dict[str, Any]:
    section: dict[str, Any] = {}
    for tag, value in items:
        if budget.tags < 1:
            budget.omitted += 1
            continue
        kept = convert(tag, value)
        if budget.take(kept):
            section[names.get(tag, f"0x{tag:04x}")] = kept
    return section


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
        return _text(text)
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, TiffImagePlugin.IFDRational | Fraction | float):
        return finite(value)
    if isinstance(value, tuple | list):
        return [jsonable(v) for v in value[:MAX_EXIF_ITEMS]]
    if isinstance(value, dict):
        return {str(k)[:64]: jsonable(v) for k, v in list(value.items())[:MAX_EXIF_ITEMS]}
    return _text(str(value))


def _text(text: str) -> str:
    """Cut a string to MAX_EXIF_TEXT characters, with no NUL (PostgreSQL refuses it in text)."""
    text = text.replace("\x00", "")
    return text if len(text) <= MAX_EXIF_TEXT else text[:MAX_EXIF_TEXT] + f"… ({len(text)} characters)"


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
        return _text(text)
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
