"""Hostile image files, built in memory and kept small: what they declare is what makes them hostile.

Each builder returns bytes a decoder would accept as a real file of its format. Sizes are chosen
against the hostile suite's own limit (LIMIT_PIXELS): a bomb declares a few times that, so a
decoder that believed it would do real (if bounded) work, while the file stays a few KB.
"""

from __future__ import annotations

import io
import re
import struct
import zlib

import numpy as np
from PIL import Image

# The pixel limit the hostile suite's apps run with; every bomb declares more than this.
LIMIT_PIXELS = 1_000_000
# A side that makes any frame over the limit: 2000 x 2000 = 4 MP.
BIG = 2000


def _save(image: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


def small_png(width: int = 32, height: int = 32) -> bytes:
    """A plain valid PNG with some contrast (a dark square on white)."""
    arr = np.full((height, width), 255, np.uint8)
    arr[height // 4 : height * 3 // 4, width // 4 : width * 3 // 4] = 0
    return _save(Image.fromarray(arr), "PNG")


# --- PNG ------------------------------------------------------------------------------------------


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_bomb(width: int = BIG, height: int = BIG) -> bytes:
    """A complete 1-bit PNG of width x height zeros: a few KB that decode to width*height pixels."""
    row = b"\x00" * (1 + (width + 7) // 8)
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(row * height, 9))
        + png_chunk(b"IEND", b"")
    )


def apng_with_big_frame() -> bytes:
    """An animated PNG whose default image is 16x16 and whose second frame declares BIG x BIG."""
    base = small_png(16, 16)
    chunks = _png_chunks(base)
    ihdr = next(c for c in chunks if c[0] == b"IHDR")
    idats = [c for c in chunks if c[0] == b"IDAT"]
    frame0 = struct.pack(">IIIIIHHBB", 0, 16, 16, 0, 0, 1, 10, 0, 0)
    frame1 = struct.pack(">IIIIIHHBB", 1, BIG, BIG, 0, 0, 1, 10, 0, 0)
    out = PNG_SIGNATURE + png_chunk(b"IHDR", ihdr[1]) + png_chunk(b"acTL", struct.pack(">II", 2, 0))
    out += png_chunk(b"fcTL", frame0)
    out += b"".join(png_chunk(b"IDAT", data) for _, data in idats)
    out += png_chunk(b"fcTL", frame1)
    out += png_chunk(b"fdAT", struct.pack(">I", 2) + zlib.compress(b"\x00" * 64))
    return out + png_chunk(b"IEND", b"")


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    pos, out = 8, []
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        out.append((data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return out


def png_padded(size: int) -> bytes:
    """A valid small PNG of exactly `size` bytes (a private ancillary chunk fills it up)."""
    base = small_png(32, 32)
    filler = size - len(base) - 12
    if filler < 0:
        raise ValueError(f"a PNG cannot be as small as {size} bytes")
    iend = png_chunk(b"IEND", b"")
    return base[: -len(iend)] + png_chunk(b"prVt", b"\x00" * filler) + iend


# --- containers the service does not take -----------------------------------------------------------


def ico_wrapping_png(png: bytes | None = None) -> bytes:
    """An ICO whose directory says 16x16 and whose one entry is a PNG of BIG x BIG (the report's bomb)."""
    png = png or png_bomb()
    header = struct.pack("<HHH", 0, 1, 1)
    entry = struct.pack("<BBBBHHII", 16, 16, 0, 0, 1, 32, len(png), 6 + 16)
    return header + entry + png


def other_formats() -> dict[str, bytes]:
    """Small valid images in formats Pillow or OpenCV read but the service does not take."""
    img = Image.fromarray(np.full((32, 32, 3), 200, np.uint8))
    out = {
        "ICO": _save(img, "ICO", sizes=[(32, 32)]),
        "PPM": _save(img, "PPM"),
        "TGA": _save(img, "TGA"),
        "PCX": _save(img, "PCX"),
        "SGI": _save(img, "SGI"),
        "DDS": _save(img, "DDS"),
        "JPEG2000": _save(img, "JPEG2000"),
        "ICO with a PNG bomb": ico_wrapping_png(),
    }
    return out


# --- JPEG -------------------------------------------------------------------------------------------

# After a scan header, the entropy-coded data runs to the next marker that is not a restart (RSTn)
# or a stuffed 0xFF00.
AFTER_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """Return (marker, start, end) of each JPEG segment, a scan's entropy-coded data included."""
    pos, out = 2, []
    while pos < len(data):
        marker = data[pos + 1]
        if marker == 0xD9:
            out.append((marker, pos, pos + 2))
            break
        (length,) = struct.unpack_from(">H", data, pos + 2)
        end = pos + 2 + length
        if marker == 0xDA:
            end = AFTER_SCAN.search(data, end).start()
        out.append((marker, pos, end))
        pos = end
    return out


def jpeg_scan_bomb(side: int = 960, repeats: int = 5000) -> bytes:
    """A progressive JPEG whose last (AC refinement) scan is repeated: tiny, and slow to decode.

    Each repeat is a dozen bytes; a decoder walks every block of the image once per scan (960x960:
    about 4 s for 5000 scans, where the honest file decodes in milliseconds).
    """
    plain = _save(Image.new("L", (side, side), 0), "JPEG", progressive=True)
    scans = [s for s in jpeg_segments(plain) if s[0] == 0xDA]
    _, start, end = scans[-1]
    return plain[:end] + plain[start:end] * repeats + plain[end:]


def jpeg_declaring(width: int = BIG, height: int = BIG) -> bytes:
    """A 16x16 baseline JPEG whose frame header (SOF) declares width x height."""
    data = bytearray(_save(Image.new("L", (16, 16), 128), "JPEG"))
    sof = next(s for s in jpeg_segments(bytes(data)) if s[0] == 0xC0)
    struct.pack_into(">HH", data, sof[1] + 5, height, width)
    return bytes(data)


# --- GIF --------------------------------------------------------------------------------------------


def _gif_frames(count: int, side: int = 4) -> bytes:
    frames = [Image.new("P", (side, side), i % 2) for i in range(count)]
    for frame in frames:
        frame.putpalette([0, 0, 0, 255, 255, 255])
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=10, optimize=False)
    return buf.getvalue()


def gif_descriptors(data: bytes) -> list[int]:
    """Return the offsets of every image descriptor (0x2C) in a GIF."""
    flags = data[10]
    pos = 13 + (3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0)
    out = []
    while data[pos] != 0x3B:
        if data[pos] == 0x2C:
            out.append(pos)
            local = data[pos + 9]
            pos += 10 + (3 * 2 ** ((local & 7) + 1) if local & 0x80 else 0) + 1
        else:
            pos += 2
        while data[pos]:
            pos += data[pos] + 1
        pos += 1
    return out


def gif_with_big_frame() -> bytes:
    """A two-frame GIF: a 4x4 first frame, then a frame declaring BIG x BIG."""
    data = bytearray(_gif_frames(2))
    second = gif_descriptors(bytes(data))[1]
    struct.pack_into("<HH", data, second + 5, BIG, BIG)
    return bytes(data)


def gif_screen_bomb() -> bytes:
    """A GIF whose logical screen declares BIG x BIG around a 4x4 frame."""
    data = bytearray(_gif_frames(1))
    struct.pack_into("<HH", data, 6, BIG, BIG)
    return bytes(data)


def gif_many_frames(count: int = 1500) -> bytes:
    """An animated GIF of `count` 4x4 frames (a few dozen bytes each)."""
    return _gif_frames(count)


# --- WebP, BMP --------------------------------------------------------------------------------------


def webp_canvas_bomb() -> bytes:
    """An animated WebP of two 8x8 frames whose canvas (VP8X) declares BIG x BIG."""
    frames = [Image.new("RGB", (8, 8), (i * 200, 0, 0)) for i in range(2)]
    buf = io.BytesIO()
    frames[0].save(buf, format="WEBP", save_all=True, append_images=frames[1:], lossless=True)
    data = bytearray(buf.getvalue())
    vp8x = data.index(b"VP8X")
    data[vp8x + 12 : vp8x + 15] = (BIG - 1).to_bytes(3, "little")
    data[vp8x + 15 : vp8x + 18] = (BIG - 1).to_bytes(3, "little")
    return bytes(data)


def webp_many_frames(count: int = 1500) -> bytes:
    """An animated WebP of `count` 2x2 frames."""
    frames = [Image.new("RGB", (2, 2), ((i % 2) * 255, 0, 0)) for i in range(count)]
    buf = io.BytesIO()
    frames[0].save(
        buf, format="WEBP", save_all=True, append_images=frames[1:], lossless=True, minimize_size=False
    )
    return buf.getvalue()


def apng_many_frames(count: int = 1500) -> bytes:
    """An animated PNG of `count` 16x16 frames (the same tiny frame data each time)."""
    base = small_png(16, 16)
    chunks = _png_chunks(base)
    ihdr = next(c for c in chunks if c[0] == b"IHDR")[1]
    idat = b"".join(data for kind, data in chunks if kind == b"IDAT")
    out = PNG_SIGNATURE + png_chunk(b"IHDR", ihdr) + png_chunk(b"acTL", struct.pack(">II", count, 0))
    sequence = 0
    for index in range(count):
        out += png_chunk(b"fcTL", struct.pack(">IIIIIHHBB", sequence, 16, 16, 0, 0, 1, 10, 0, 0))
        sequence += 1
        if index == 0:
            out += png_chunk(b"IDAT", idat)
        else:
            out += png_chunk(b"fdAT", struct.pack(">I", sequence) + idat)
            sequence += 1
    return out + png_chunk(b"IEND", b"")


def bmp_declaring(width: int = BIG, height: int = BIG) -> bytes:
    """A 16x16 BMP whose header declares width x height."""
    data = bytearray(_save(Image.new("L", (16, 16), 128), "BMP"))
    struct.pack_into("<ii", data, 18, width, height)
    return bytes(data)


# --- TIFF -------------------------------------------------------------------------------------------


def tiff(pages: list[dict]) -> bytes:
    """A little-endian TIFF of 8-bit gray pages; each page dict gives width, height and optionally tile.

    Pixel data is stored (deflate) only for the declared strip or tile; that is what a decoder
    would allocate and inflate.
    """
    out = bytearray(b"II*\x00\x00\x00\x00\x00")
    next_pointer = 4
    for page in pages:
        width, height = page["width"], page["height"]
        tile = page.get("tile")
        block = tile if tile else (width, height)
        data = zlib.compress(b"\x00" * (block[0] * block[1]), 9)
        data_offset = len(out)
        out += data
        if len(out) % 2:
            out += b"\x00"
        entries = [
            (256, 4, 1, width),
            (257, 4, 1, height),
            (258, 3, 1, 8),
            (259, 3, 1, 8),  # deflate
            (262, 3, 1, 1),  # black is zero
            (277, 3, 1, 1),
        ]
        if tile:
            entries += [
                (322, 3, 1, tile[0]),
                (323, 3, 1, tile[1]),
                (324, 4, 1, data_offset),
                (325, 4, 1, len(data)),
            ]
        else:
            entries += [(273, 4, 1, data_offset), (278, 4, 1, height), (279, 4, 1, len(data))]
        entries.sort()
        ifd = len(out)
        struct.pack_into("<I", out, next_pointer, ifd)
        out += struct.pack("<H", len(entries))
        for tag, kind, count, value in entries:
            value_bytes = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
            out += struct.pack("<HHI", tag, kind, count) + value_bytes
        next_pointer = len(out)
        out += b"\x00\x00\x00\x00"
    return bytes(out)


def tiff_with_big_page() -> bytes:
    """A TIFF whose first page is 16x16 and whose second page declares BIG x BIG."""
    return tiff([{"width": 16, "height": 16}, {"width": BIG, "height": 16}, {"width": BIG, "height": BIG}])


def tiff_many_pages(count: int = 1500) -> bytes:
    """A TIFF of `count` 1x1 pages."""
    return tiff([{"width": 1, "height": 1}] * count)


def tiff_with_big_tile() -> bytes:
    """A 16x16 TIFF stored as one tile of 1024 x 1024: a decoder allocates and inflates the whole tile."""
    return tiff([{"width": 16, "height": 16, "tile": (1024, 1024)}])


# Every container's way of declaring more pixels than the limit, by name. A file that is refused for
# its declared size must be refused before a single pixel is decoded.
def declared_bombs() -> dict[str, bytes]:
    """Return every declared-size bomb, by a name that says where the size is declared."""
    return {
        "PNG IHDR": png_bomb(),
        "APNG second frame": apng_with_big_frame(),
        "JPEG SOF": jpeg_declaring(),
        "GIF logical screen": gif_screen_bomb(),
        "GIF second frame": gif_with_big_frame(),
        "WebP canvas": webp_canvas_bomb(),
        "BMP header": bmp_declaring(),
        "TIFF later page": tiff_with_big_page(),
        "TIFF tile": tiff_with_big_tile(),
    }


def animations() -> dict[str, bytes]:
    """Return an animation (or multi-page file) of every container with more frames than the limit."""
    return {
        "GIF": gif_many_frames(),
        "APNG": apng_many_frames(),
        "WebP": webp_many_frames(),
        "TIFF pages": tiff_many_pages(),
    }
