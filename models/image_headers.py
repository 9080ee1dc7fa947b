"""Read what an encoded image declares, before a single pixel of it is decoded.

The service takes six formats (FORMATS), recognised by their signatures; anything else is refused
unread, whatever Pillow or OpenCV could make of it (ICO, PSD, TGA, JPEG 2000, ... each one more
decoder to attack). Each taken format's headers are walked to every frame, page, tile, canvas and
sub-image it declares, and the file is refused if any of them is over the pixel limit, if it has
more than MAX_FRAMES frames, or, for a JPEG, more scans than a decoder should spend on one image.
Decoders then only meet files whose cost is known. Errors are `ModelInputError`: 415 (not a taken
format, or headers that cannot be read), 413 image_too_large, 413 image_too_complex.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from models.runtime import ModelInputError

FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")
# Frames of an animation, pages of a TIFF: the models read the first, so a long animation buys the
# client nothing; this many is far beyond any drawing, photo or webcam frame sent here.
MAX_FRAMES = 1000
# A progressive JPEG's scans each walk every block of the image again: libjpeg-turbo leaves a scan
# limit to the application (djpeg -maxscans, TJPARAM_SCANLIMIT). Encoders write about 10 (libjpeg's
# progressive script) to 20 (mozjpeg); a file with thousands took 23 s to decode here.
MAX_JPEG_SCANS = 64
# ... and the scans of a large image cost in proportion to its pixels: at most this many full-image
# passes of the largest image allowed (scans x pixels <= SCAN_PASSES x max_pixels).
SCAN_PASSES = 16
# Chunks, segments, sub-blocks and TIFF entries walked in one file. A real image of a few MB has a
# few thousand; a file of nothing but empty chunks could make a walk of millions.
MAX_ITEMS = 100_000
# TIFF compressions a decoder here handles with bounded work: none, CCITT (2-4), LZW, deflate
# (8, 32946), PackBits. JPEG-in-TIFF (6, 7) would reopen the scan problem inside a tile.
TIFF_COMPRESSIONS = frozenset({1, 2, 3, 4, 5, 8, 32773, 32946})

# After a JPEG scan header, the entropy-coded data runs to the next marker that is not a restart
# marker (RSTn), a stuffed 0xFF00 or a fill byte.
_AFTER_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
# JPEG frame headers: SOF0-SOF15 but DHT (C4), JPG (C8) and DAC (CC).
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


@dataclass(frozen=True)
class Declared:
    """What a file declares: its format, the size of the image a decoder makes, its frame count."""

    format: str
    width: int
    height: int
    frames: int = 1
    # A PNG that libspng decodes exactly as OpenCV would, with nothing more to read first: 8-bit
    # gray, RGB or RGBA, one frame, no tRNS. Such files skip Pillow's header parse (bench/peers).
    plain_png: bool = field(default=False, compare=False)


def sniff(data: bytes) -> str | None:
    """Name the taken format whose signature starts `data`, or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if data.startswith(b"BM"):
        return "BMP"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "WEBP"
    if data.startswith((b"II*\x00", b"MM\x00*")):
        return "TIFF"
    return None


def not_taken() -> ModelInputError:
    """Return the 415 for data that is not an image in a taken format."""
    return ModelInputError(
        "The data is not an image in a supported format (PNG, JPEG, GIF, BMP, WebP, TIFF).",
        "not_an_image",
        415,
    )


def corrupt(fmt: str, why: str) -> ModelInputError:
    """Return the 415 for a file whose headers cannot be read."""
    return ModelInputError(f"The {fmt} file cannot be read: {why}.", "not_an_image", 415)


def too_complex(message: str, **limit: int) -> ModelInputError:
    """Return the 413 for a file that would cost more work than one image may."""
    return ModelInputError(message, "image_too_complex", 413, **limit)


def check_pixels(width: int, height: int, limit: int, what: str = "The image") -> None:
    """Refuse a declared width x height over the pixel limit (413 image_too_large)."""
    if width * height > limit:
        raise ModelInputError(
            f"{what} is {width}x{height} pixels, over the {limit} pixel limit.",
            "image_too_large",
            413,
            limit_pixels=limit,
        )


def _check_frames(count: int) -> None:
    if count > MAX_FRAMES:
        raise too_complex(f"The image has more than {MAX_FRAMES} frames.", limit_frames=MAX_FRAMES)


class _Walk:
    """Count the items a header walk visits, and stop it past MAX_ITEMS."""

    def __init__(self) -> None:
        self.items = 0

    def step(self, count: int = 1) -> None:
        self.items += count
        if self.items > MAX_ITEMS:
            raise too_complex(f"The file has more than {MAX_ITEMS} chunks or blocks.", limit_items=MAX_ITEMS)


def read_declared(data: bytes, *, max_pixels: int) -> Declared:
    """Read the format and every declared size of `data`; refuse it if any is over a limit."""
    fmt = sniff(data)
    if fmt is None:
        raise not_taken()
    try:
        return _READERS[fmt](data, max_pixels)
    except ModelInputError:
        raise
    except (struct.error, IndexError, ValueError):
        raise corrupt(fmt, "its headers are truncated or inconsistent") from None


# --- PNG (and APNG) --------------------------------------------------------------------------------


def _png(data: bytes, limit: int) -> Declared:
    length, kind, width, height = struct.unpack_from(">I4sII", data, 8)
    if kind != b"IHDR" or length != 13:
        raise corrupt("PNG", "it does not start with its header chunk (IHDR)")
    check_pixels(width, height, limit)
    depth, color = data[24], data[25]
    walk, frames, pos, transparency = _Walk(), 0, 8, False
    while pos + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        walk.step()
        if kind == b"tRNS":
            transparency = True
        elif kind == b"acTL":
            _check_frames(struct.unpack_from(">I", data, pos + 8)[0])
        elif kind == b"fcTL":
            frames += 1
            _check_frames(frames)
            w, h, x, y = struct.unpack_from(">IIII", data, pos + 12)
            check_pixels(x + w, y + h, limit, f"Frame {frames} (with its offset)")
        elif kind == b"IEND":
            break
        pos += 12 + length
    plain = depth == 8 and color in (0, 2, 6) and frames <= 1 and not transparency
    return Declared("PNG", width, height, max(frames, 1), plain_png=plain)


# --- JPEG ------------------------------------------------------------------------------------------


def _jpeg(data: bytes, limit: int) -> Declared:
    walk, pos, scans, size = _Walk(), 2, 0, None
    while pos < len(data):
        if data[pos] != 0xFF:  # stray bytes between segments: libjpeg skips them (with a warning)
            pos = data.find(b"\xff", pos)
            if pos < 0:
                break
        while data[pos] == 0xFF:  # fill bytes before a marker
            pos += 1
        marker = data[pos]
        pos += 1
        walk.step()
        if marker == 0xD9:  # end of image: what follows (an MPO's other pictures) is never decoded
            break
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            continue
        (length,) = struct.unpack_from(">H", data, pos)
        if marker in _SOF:
            if size is not None:
                raise corrupt("JPEG", "it has more than one frame (hierarchical JPEG)")
            height, width, components = struct.unpack_from(">HHB", data, pos + 3)
            if not width or not height:
                raise corrupt("JPEG", "its frame declares no size")
            if components > 4:
                raise corrupt("JPEG", f"its frame has {components} components")
            check_pixels(width, height, limit)
            size = (width, height)
        pos += length
        if marker == 0xDA:  # start of scan: count it, then skip its entropy-coded data
            if size is None:
                raise corrupt("JPEG", "a scan comes before the frame header")
            scans += 1
            passes = max(1, limit * SCAN_PASSES // (size[0] * size[1]))
            if scans > min(MAX_JPEG_SCANS, passes):
                raise too_complex(
                    f"The JPEG has more than {min(MAX_JPEG_SCANS, passes)} scans for its size.",
                    limit_scans=min(MAX_JPEG_SCANS, passes),
                )
            following = _AFTER_SCAN.search(data, pos)
            if following is None:  # truncated inside a scan: the decoder decides what is left
                break
            pos = following.start()
    if size is None:
        raise corrupt("JPEG", "it has no frame header")
    return Declared("JPEG", *size)


# --- GIF -------------------------------------------------------------------------------------------


def _gif(data: bytes, limit: int) -> Declared:
    width, height, flags = struct.unpack_from("<HHB", data, 6)
    walk, frames = _Walk(), 0
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    canvas = (width, height)
    while pos < len(data) and data[pos] != 0x3B:  # 0x3B: trailer
        block = data[pos]
        if block == 0x2C:  # image descriptor
            x, y, w, h, local = struct.unpack_from("<HHHHB", data, pos + 1)
            frames += 1
            _check_frames(frames)
            # A frame may reach past the logical screen; decoders then grow the canvas to hold it.
            canvas = (max(canvas[0], x + w), max(canvas[1], y + h))
            check_pixels(*canvas, limit, "The image" if frames == 1 else f"Frame {frames} (with its offset)")
            pos += 10 + (3 << ((local & 7) + 1) if local & 0x80 else 0) + 1  # + LZW code size
        elif block == 0x21:  # extension: label, then sub-blocks
            pos += 2
        else:  # not a block: decoders stop here too
            break
        while pos < len(data) and data[pos]:  # data sub-blocks, up to an empty one
            walk.step()
            pos += data[pos] + 1
        pos += 1
    if frames == 0:
        raise corrupt("GIF", "it has no image")
    return Declared("GIF", *canvas, frames)


# --- BMP -------------------------------------------------------------------------------------------


def _bmp(data: bytes, limit: int) -> Declared:
    (header,) = struct.unpack_from("<I", data, 14)
    if header == 12:  # OS/2 1.x: unsigned 16-bit sides
        width, height = struct.unpack_from("<HH", data, 18)
    else:
        width, height, _, _, compression = struct.unpack_from("<iiHHI", data, 18)
        if compression in (4, 5):  # a JPEG or PNG inside: decoded by neither of the service's decoders
            raise corrupt("BMP", "it wraps a JPEG or PNG")
        height = abs(height)  # negative: rows stored top-down
    if width <= 0 or height <= 0:
        raise corrupt("BMP", "it declares no size")
    check_pixels(width, height, limit)
    return Declared("BMP", width, height)


# --- WebP ------------------------------------------------------------------------------------------


def _u24(data: bytes, pos: int) -> int:
    return int.from_bytes(data[pos : pos + 3], "little")


def _webp(data: bytes, limit: int) -> Declared:
    walk, frames = _Walk(), [0]
    size = _webp_chunks(data, 12, len(data), limit, walk, frames)
    if size is None:
        raise corrupt("WebP", "it has no image chunk")
    return Declared("WEBP", *size, max(frames[0], 1))


def _webp_chunks(
    data: bytes, pos: int, end: int, limit: int, walk: _Walk, frames: list[int]
) -> tuple[int, int] | None:
    """Walk RIFF chunks in data[pos:end]; return the canvas (or the first bitstream's) size."""
    size = None
    while pos + 8 <= end:
        kind, length = struct.unpack_from("<4sI", data, pos)
        body = pos + 8
        walk.step()
        if kind == b"VP8X":
            size = (_u24(data, body + 4) + 1, _u24(data, body + 7) + 1)
            check_pixels(*size, limit, "The canvas")
        elif kind == b"ANMF":
            frames[0] += 1
            _check_frames(frames[0])
            x, y = 2 * _u24(data, body), 2 * _u24(data, body + 3)
            w, h = _u24(data, body + 6) + 1, _u24(data, body + 9) + 1
            check_pixels(x + w, y + h, limit, f"Frame {frames[0]} (with its offset)")
            _webp_chunks(data, body + 16, min(body + length, end), limit, walk, frames)
        elif kind == b"VP8 ":
            if data[body + 3 : body + 6] != b"\x9d\x01\x2a":
                raise corrupt("WebP", "its VP8 bitstream has no start code")
            w, h = struct.unpack_from("<HH", data, body + 6)
            bitstream = (w & 0x3FFF, h & 0x3FFF)
            check_pixels(*bitstream, limit)
            size = size or bitstream
        elif kind == b"VP8L":
            if data[body] != 0x2F:
                raise corrupt("WebP", "its lossless bitstream has no signature")
            (bits,) = struct.unpack_from("<I", data, body + 1)
            bitstream = ((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
            check_pixels(*bitstream, limit)
            size = size or bitstream
        pos = body + length + (length & 1)
    return size


# --- TIFF ------------------------------------------------------------------------------------------

_TIFF_WIDTH, _TIFF_LENGTH, _TIFF_BITS, _TIFF_COMPRESSION = 256, 257, 258, 259
_TIFF_SAMPLES, _TIFF_TILE_WIDTH, _TIFF_TILE_LENGTH, _TIFF_SUBIFDS = 277, 322, 323, 330
_TIFF_TYPE_SIZES = {1: 1, 3: 2, 4: 4, 13: 4, 16: 8}


def _tiff(data: bytes, limit: int) -> Declared:
    order = "<" if data[:2] == b"II" else ">"
    queue, seen, walk, pages, first = [struct.unpack_from(order + "I", data, 4)[0]], set(), _Walk(), 0, None
    while queue:
        offset = queue.pop(0)
        if offset == 0 or offset in seen:
            continue
        seen.add(offset)
        pages += 1
        _check_frames(pages)
        (count,) = struct.unpack_from(order + "H", data, offset)
        walk.step(count + 1)
        tags = {}
        for index in range(count):
            tag, kind, n = struct.unpack_from(order + "HHI", data, offset + 2 + 12 * index)
            tags[tag] = _tiff_values(data, order, offset + 10 + 12 * index, kind, n)
        width, height = tags.get(_TIFF_WIDTH, [0])[0], tags.get(_TIFF_LENGTH, [0])[0]
        what = "The image" if pages == 1 else f"Page {pages}"
        check_pixels(width, height, limit, what)
        if _TIFF_TILE_WIDTH in tags:
            check_pixels(
                tags[_TIFF_TILE_WIDTH][0], tags.get(_TIFF_TILE_LENGTH, [0])[0], limit, f"{what}'s tile"
            )
        if tags.get(_TIFF_COMPRESSION, [1])[0] not in TIFF_COMPRESSIONS:
            raise corrupt(
                "TIFF", f"its compression ({tags[_TIFF_COMPRESSION][0]}) is not one the service takes"
            )
        if tags.get(_TIFF_SAMPLES, [1])[0] > 4 or max(tags.get(_TIFF_BITS, [8]), default=8) > 16:
            raise corrupt("TIFF", "it has more than 4 samples or 16 bits per sample")
        if first is None:
            if not width or not height:
                raise corrupt("TIFF", "its first page declares no size")
            first = (width, height)
        queue.extend(tags.get(_TIFF_SUBIFDS, []))
        queue.append(struct.unpack_from(order + "I", data, offset + 2 + 12 * count)[0])
    if first is None:
        raise corrupt("TIFF", "it has no page")
    return Declared("TIFF", *first, pages)


def _tiff_values(data: bytes, order: str, pos: int, kind: int, count: int) -> list[int]:
    """Read a TIFF entry's values (the first MAX_FRAMES at most): inline, or where its offset points."""
    size = _TIFF_TYPE_SIZES.get(kind)
    if size is None or size == 8:
        return []
    count = min(count, MAX_FRAMES)
    if size * count > 4:
        (pos,) = struct.unpack_from(order + "I", data, pos)
    code = {1: "B", 2: "H", 4: "I"}[size]
    return list(struct.unpack_from(f"{order}{count}{code}", data, pos))


_READERS: dict[str, Callable[[bytes, int], Declared]] = {
    "PNG": _png,
    "JPEG": _jpeg,
    "GIF": _gif,
    "BMP": _bmp,
    "WEBP": _webp,
    "TIFF": _tiff,
}
