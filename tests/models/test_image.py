"""Image decoding without Flask: every accepted encoding, every bad input, every pixel layout."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import time

import cv2
import numpy as np
import pytest
from PIL import Image

from models.image import (
    JSON_MAX_DEPTH,
    MAX_ARRAY_SIDE,
    InputImage,
    decode_bytes,
    decode_value,
    limit_pillow,
    on_white,
    parse_json,
    to_gray,
)
from models.image_headers import MAX_FRAMES, MAX_JPEG_SCANS, SCAN_PASSES, Declared, read_declared, sniff
from models.runtime import ModelInputError
from tests.conftest import data_url, png_bytes
from tests.hostile.bombs import (
    LIMIT_PIXELS,
    animations,
    declared_bombs,
    jpeg_scan_bomb,
    other_formats,
    png_padded,
)

LIMITS = {"max_bytes": 8 * 1024 * 1024, "max_pixels": 40_000_000}


def decode(value, name: str = "image", **limits) -> InputImage:
    return decode_value(value, name, **{**LIMITS, **limits})


def rgba_canvas() -> np.ndarray:
    """A transparent canvas with one opaque black square, as a browser canvas exports it."""
    arr = np.zeros((50, 60, 4), np.uint8)
    arr[10:20, 10:20, 3] = 255
    return arr


# --- what is accepted -------------------------------------------------------------------------


def test_data_url():
    image = decode(data_url(png_bytes(rgba_canvas())))
    assert (image.source, image.format, image.width, image.height) == ("data_url", "PNG", 60, 50)


def test_transparency_is_composited_on_white():
    gray = decode(data_url(png_bytes(rgba_canvas()))).gray()
    # 100 black pixels out of 3000, the rest white: not black, as a naive RGB drop would give.
    assert gray.min() == 0
    assert gray.mean() == pytest.approx(255 * (1 - 100 / 3000), abs=0.5)


def test_plain_base64():
    image = decode(base64.b64encode(png_bytes(np.full((8, 8), 200, np.uint8))).decode())
    assert image.source == "base64" and image.gray().mean() == 200


def test_urlsafe_base64_without_padding_and_line_breaks():
    raw = png_bytes(np.full((9, 7), 10, np.uint8))
    b64 = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    assert decode(b64).gray().mean() == 10
    wrapped = "\n".join(b64[i : i + 76] for i in range(0, len(b64), 76))
    assert decode(wrapped).gray().mean() == 10


@pytest.mark.parametrize("as_string", [True, False])
def test_legacy_nested_array_gray(as_string):
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    image = decode(json.dumps(arr.tolist()) if as_string else arr.tolist())
    assert (image.source, image.format, image.width, image.height) == ("legacy_array", "ARRAY", 4, 3)
    assert np.array_equal(image.gray(), arr)


def test_legacy_nested_array_bgr():
    arr = np.zeros((4, 5, 3), np.uint8)
    arr[..., 2] = 255  # pure red in BGR
    assert decode(json.dumps(arr.tolist())).gray().mean() == pytest.approx(76, abs=1)  # red's luma


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (40, 20), "white")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif)
    image = decode_bytes(buf.getvalue(), source="raw", **LIMITS)
    assert (image.format, image.width, image.height) == ("JPEG", 20, 40)


def test_upload_keeps_its_bytes_and_name():
    data = png_bytes(np.zeros((5, 5), np.uint8))
    image = decode_bytes(data, source="multipart", filename="x.png", **LIMITS)
    assert image.encoded() is data and image.filename == "x.png"


def test_legacy_array_is_stored_as_png():
    image = decode([[0, 255], [255, 0]])
    assert cv2.imdecode(np.frombuffer(image.encoded(), np.uint8), cv2.IMREAD_UNCHANGED).tolist() == [
        [0, 255],
        [255, 0],
    ]


# --- what is refused, with the status and code the API answers ------------------------------------


def _bomb() -> bytes:
    buf = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(buf, format="PNG")  # 100 MP, a few KB compressed
    return buf.getvalue()


def _truncated_png() -> bytes:
    data = png_bytes(np.random.default_rng(7).integers(0, 256, (16, 24, 4), dtype=np.uint8))
    return data[: len(data) * 2 // 3]


BAD_VALUES = [
    ("empty field", "", 400, "missing_image"),
    ("blank field", "  \n", 400, "missing_image"),
    ("not a string", 42, 400, "invalid_image_field"),
    ("invalid base64", "data:image/png;base64,@@@not-base64@@@", 400, "invalid_base64"),
    ("non-base64 data url", "data:image/png,abc", 400, "invalid_base64"),
    ("base64 of nothing", "data:image/png;base64,", 400, "missing_image"),
    ("not an image", base64.b64encode(b"hello, not an image").decode(), 415, "not_an_image"),
    ("ragged array", "[[1, 2], [3]]", 400, "invalid_array"),
    ("array out of range", "[[1, 300]]", 400, "invalid_array"),
    ("negative array", [[-1, 2]], 400, "invalid_array"),
    ("array bad shape", "[1, 2, 3]", 400, "invalid_array"),
    ("array of text", [["a", "b"]], 400, "invalid_array"),
    ("array bad json", "[[1, 2", 400, "invalid_array"),
    ("empty array", [], 400, "invalid_array"),
]


@pytest.mark.parametrize("case,value,status,code", BAD_VALUES, ids=[c[0] for c in BAD_VALUES])
def test_bad_value(case, value, status, code):
    with pytest.raises(ModelInputError) as info:
        decode(value)
    assert (info.value.status, info.value.code) == (status, code)
    assert len(info.value.message) > 10


BAD_BYTES = [
    ("text as image", b"GIF89a-broken", 415, "not_an_image"),
    ("truncated png", _truncated_png(), 415, "not_an_image"),
    ("decompression bomb", _bomb(), 413, "image_too_large"),
]


@pytest.mark.parametrize("case,data,status,code", BAD_BYTES, ids=[c[0] for c in BAD_BYTES])
def test_bad_bytes(case, data, status, code):
    with pytest.raises(ModelInputError) as info:
        decode_bytes(data, source="raw", **LIMITS)
    assert (info.value.status, info.value.code) == (status, code)


def test_limits_are_the_callers():
    data = png_bytes(np.zeros((30, 40), np.uint8))
    with pytest.raises(ModelInputError) as info:
        decode_bytes(data, source="raw", max_bytes=len(data) - 1, max_pixels=10**6)
    assert (info.value.status, info.value.code, info.value.extra) == (
        413,
        "payload_too_large",
        {"limit_bytes": len(data) - 1},
    )
    with pytest.raises(ModelInputError) as info:
        decode_bytes(data, source="raw", max_bytes=len(data), max_pixels=30 * 40 - 1)
    assert (info.value.code, info.value.extra) == ("image_too_large", {"limit_pixels": 1199})
    # Base64 is refused by its length, before it is decoded; arrays by their pixel count.
    with pytest.raises(ModelInputError, match="2048 byte limit"):
        decode(base64.b64encode(bytes(4096)).decode(), max_bytes=2048)
    with pytest.raises(ModelInputError) as info:
        decode(np.zeros((30, 40), int).tolist(), max_pixels=1000)
    assert info.value.code == "image_too_large"


# --- every PNG layout, and the one set of pixel accessors ------------------------------------------


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
def test_every_png_layout_decodes_as_opencv_does(name, data, fast):
    image = decode_bytes(data, source="raw", **LIMITS)
    assert (image.order == "RGB") is fast, name  # the libspng path is taken exactly where it is safe
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels.dtype != np.uint8:
        pixels = cv2.convertScaleAbs(pixels, alpha=255.0 / 65535)
    reference = InputImage(pixels=pixels, format="PNG", source="raw")
    for mode in ("gray", "bgr", "rgb"):
        assert np.array_equal(image.pixels_as(mode), reference.pixels_as(mode)), (name, mode)


def test_pixels_as_names_the_three_modes():
    bgr = np.zeros((2, 3, 3), np.uint8)
    bgr[..., 0] = 255  # blue
    image = InputImage(pixels=bgr, format="ARRAY", source="legacy_array")
    assert image.pixels_as("bgr")[0, 0].tolist() == [255, 0, 0]
    assert image.pixels_as("rgb")[0, 0].tolist() == [0, 0, 255]
    assert image.pixels_as("gray").shape == (2, 3)
    with pytest.raises(ValueError, match="input mode"):
        image.pixels_as("cmyk")


def test_on_white_rounds_as_the_integer_formula():
    color = np.arange(256, dtype=np.uint8).reshape(16, 16)
    alpha = color.T.copy()
    expected = 255 - ((255 - color.astype(int)) * alpha.astype(int) + 127) // 255
    assert np.array_equal(on_white(color, alpha), expected)


# --- the one gray converter for arrays --------------------------------------------------------------


def test_to_gray_takes_either_colour_order_and_ignores_alpha():
    rgb = np.random.default_rng(0).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    bgr = rgb[:, :, ::-1]
    expected = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    assert np.array_equal(to_gray(bgr), expected)
    assert np.array_equal(to_gray(rgb, order="RGB"), expected)
    bgra = np.dstack([bgr, np.zeros((6, 7), np.uint8)])
    assert np.array_equal(to_gray(bgra), expected)


def test_to_gray_passes_gray_through_and_clips_other_types():
    gray = np.full((4, 4), 9, np.uint8)
    assert to_gray(gray) is gray
    assert np.array_equal(to_gray(gray[..., None]), gray)
    assert to_gray(np.array([[-5.0, 300.0]])).tolist() == [[0, 255]]


@pytest.mark.parametrize("shape", [(4,), (4, 4, 2), (2, 2, 2, 2)])
def test_to_gray_refuses_other_shapes(shape):
    with pytest.raises(ModelInputError, match="gray or colour"):
        to_gray(np.zeros(shape, np.uint8))


# --- what a file declares, read before decoding (models.image_headers) -----------------------------


def _saved(image: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


def _stray_bytes(jpeg: bytes) -> bytes:
    """Put three zero bytes before the quantization tables, as some cameras do (libjpeg skips them)."""
    at = jpeg.index(b"\xff\xdb")
    return jpeg[:at] + b"\x00\x00\x00" + jpeg[at:]


def _honest_files() -> dict[str, tuple[bytes, tuple[str, int, int, int]]]:
    """One file per taken format and layout, with the (format, width, height, frames) it declares."""
    rgb = Image.fromarray(np.random.default_rng(1).integers(0, 256, (30, 40, 3), dtype=np.uint8))
    frames = [rgb, rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    return {
        "png": (png_bytes(np.zeros((30, 40), np.uint8)), ("PNG", 40, 30, 1)),
        "jpeg": (_saved(rgb, "JPEG"), ("JPEG", 40, 30, 1)),
        "progressive jpeg": (_saved(rgb, "JPEG", progressive=True), ("JPEG", 40, 30, 1)),
        "jpeg with exif": (_saved(rgb, "JPEG", exif=Image.Exif()), ("JPEG", 40, 30, 1)),
        "jpeg with stray bytes between segments": (_stray_bytes(_saved(rgb, "JPEG")), ("JPEG", 40, 30, 1)),
        "gif": (_saved(rgb.convert("P"), "GIF"), ("GIF", 40, 30, 1)),
        "animated gif": (
            _saved(frames[0], "GIF", save_all=True, append_images=frames[1:]),
            ("GIF", 40, 30, 2),
        ),
        "bmp": (_saved(rgb, "BMP"), ("BMP", 40, 30, 1)),
        "webp lossy": (_saved(rgb, "WEBP"), ("WEBP", 40, 30, 1)),
        "webp lossless": (_saved(rgb, "WEBP", lossless=True), ("WEBP", 40, 30, 1)),
        "animated webp": (
            _saved(frames[0], "WEBP", save_all=True, append_images=frames[1:]),
            ("WEBP", 40, 30, 2),
        ),
        "tiff": (_saved(rgb, "TIFF"), ("TIFF", 40, 30, 1)),
        "tiff lzw": (_saved(rgb, "TIFF", compression="tiff_lzw"), ("TIFF", 40, 30, 1)),
        "tiff deflate, 2 pages": (
            _saved(
                frames[0], "TIFF", compression="tiff_adobe_deflate", save_all=True, append_images=frames[1:]
            ),
            ("TIFF", 40, 30, 2),
        ),
        "tiff 16-bit": (
            _saved(Image.fromarray(np.full((30, 40), 999, np.uint16)), "TIFF"),
            ("TIFF", 40, 30, 1),
        ),
    }


HONEST = _honest_files()


@pytest.mark.parametrize("name", list(HONEST))
def test_every_taken_format_declares_its_size_and_decodes(name):
    data, (fmt, width, height, frames) = HONEST[name]
    assert read_declared(data, max_pixels=10**6) == Declared(fmt, width, height, frames)
    image = decode_bytes(data, source="raw", **LIMITS)
    assert (image.format, image.width, image.height) == (fmt, width, height)


@pytest.mark.parametrize("name", list(HONEST))
def test_the_limit_is_inclusive_and_applies_to_every_format(name):
    data, (_, width, height, _) = HONEST[name]
    read_declared(data, max_pixels=width * height)
    with pytest.raises(ModelInputError) as info:
        read_declared(data, max_pixels=width * height - 1)
    assert (info.value.status, info.value.code) == (413, "image_too_large")


BOMBS = declared_bombs()


@pytest.mark.parametrize("name", list(BOMBS))
def test_a_declared_bomb_is_refused_before_pillow_or_a_decoder_sees_it(name, monkeypatch):
    def tripped(*args, **kwargs):
        raise AssertionError("reached a decoder")

    monkeypatch.setattr(Image, "open", tripped)
    monkeypatch.setattr(cv2, "imdecode", tripped)
    with pytest.raises(ModelInputError) as info:
        decode_bytes(BOMBS[name], source="raw", max_bytes=LIMITS["max_bytes"], max_pixels=LIMIT_PIXELS)
    assert (info.value.status, info.value.code, info.value.extra) == (
        413,
        "image_too_large",
        {"limit_pixels": LIMIT_PIXELS},
    )


OTHER = other_formats()


@pytest.mark.parametrize("name", list(OTHER))
def test_a_format_the_service_does_not_take_is_refused_unread(name):
    assert sniff(OTHER[name]) is None
    with pytest.raises(ModelInputError) as info:
        decode_bytes(OTHER[name], source="raw", **LIMITS)
    assert (info.value.status, info.value.code) == (415, "not_an_image")


def test_jpeg_scans_are_bounded_by_count_and_by_size():
    with pytest.raises(ModelInputError) as info:
        read_declared(jpeg_scan_bomb(side=64, repeats=MAX_JPEG_SCANS), max_pixels=10**6)
    assert (info.value.status, info.value.code) == (413, "image_too_complex")
    # Pillow's gray progressive script has 6 scans. An image as large as the pixel limit may have
    # SCAN_PASSES scans; one a quarter of it, four times as many (up to MAX_JPEG_SCANS).
    at_limit = 64 * 64
    read_declared(jpeg_scan_bomb(side=64, repeats=SCAN_PASSES - 6), max_pixels=at_limit)
    with pytest.raises(ModelInputError, match="scans"):
        read_declared(jpeg_scan_bomb(side=64, repeats=SCAN_PASSES - 5), max_pixels=at_limit)
    read_declared(jpeg_scan_bomb(side=64, repeats=4 * SCAN_PASSES - 6), max_pixels=4 * at_limit)
    bomb = jpeg_scan_bomb()
    started = time.perf_counter()
    with pytest.raises(ModelInputError):
        read_declared(bomb, max_pixels=10**6)
    assert time.perf_counter() - started < 0.1


@pytest.mark.parametrize("name", ["GIF", "APNG", "WebP", "TIFF pages"])
def test_an_animation_past_the_frame_limit_is_refused(name):
    with pytest.raises(ModelInputError) as info:
        read_declared(animations()[name], max_pixels=10**6)
    assert (info.value.status, info.value.code, info.value.extra) == (
        413,
        "image_too_complex",
        {"limit_frames": MAX_FRAMES},
    )


def test_truncated_or_inconsistent_headers_are_415_not_500():
    for data in HONEST.values():
        for cut in (12, 20, 30):
            with contextlib.suppress(ModelInputError):
                read_declared(data[0][:cut], max_pixels=10**6)
    float_tiff = _saved(Image.fromarray(np.ones((5, 6), np.float32)), "TIFF")
    with pytest.raises(ModelInputError) as info:
        decode_bytes(float_tiff, source="raw", **LIMITS)
    assert (info.value.status, info.value.code) == (415, "not_an_image")


def test_pillow_takes_the_service_pixel_limit(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)
    limit_pillow(1234)
    assert Image.MAX_IMAGE_PIXELS == 1234


# --- JSON, bounded, and legacy arrays' shapes ------------------------------------------------------


def test_json_nesting_is_bounded_before_parsing_and_strings_do_not_count():
    assert parse_json("[" * JSON_MAX_DEPTH + "]" * JSON_MAX_DEPTH) is not None
    with pytest.raises(ModelInputError, match="nested more than"):
        parse_json("[" * (JSON_MAX_DEPTH + 1) + "]" * (JSON_MAX_DEPTH + 1))
    with pytest.raises(ModelInputError, match="nested more than"):  # alternating, not in one run
        parse_json('{"a": [' * 20 + "1" + "]}" * 20)
    # Brackets inside strings (escaped quotes too) are text, not nesting.
    text = json.dumps({"image": "[" * 5000 + '\\"' + "{" * 5000, "rows": [[1, 2]] * 300})
    assert parse_json(text)["rows"][0] == [1, 2]
    assert parse_json(text.encode("utf-16")) == parse_json(text)


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e400", "-1e999"])
def test_json_numbers_are_finite(token):
    with pytest.raises(ModelInputError) as info:
        parse_json(f'{{"top": {token}}}')
    assert (info.value.status, info.value.code) == (400, "invalid_json")
    assert parse_json('{"top": 1e300}') == {"top": 1e300}


def test_a_legacy_array_is_measured_before_it_is_built(monkeypatch):
    def tripped(*args, **kwargs):
        raise AssertionError("an array was built")

    wide = [[0] * (MAX_ARRAY_SIDE + 1)]
    monkeypatch.setattr(np, "asarray", tripped)
    with pytest.raises(ModelInputError) as info:
        decode(wide)
    assert (info.value.status, info.value.code) == (400, "invalid_array")
    with pytest.raises(ModelInputError) as info:
        decode([[0] * 100] * 100, max_pixels=99 * 100)
    assert (info.value.status, info.value.code) == (413, "image_too_large")


@pytest.mark.parametrize("value", [[[0.0, float("nan")]], [[0.0, float("inf")]], "[[0, NaN]]"])
def test_a_legacy_array_holds_finite_numbers(value):
    with pytest.raises(ModelInputError) as info:
        decode(value)
    assert (info.value.status, info.value.code) == (400, "invalid_array")


def test_base64_of_exactly_the_byte_limit_passes():
    data = png_padded(3000)
    for size in (3000, 3001, 3002):  # every padding length
        b64 = base64.b64encode(png_padded(size)).decode()
        assert decode(b64, max_bytes=size).width == 32
    with pytest.raises(ModelInputError, match="3000 byte limit"):
        decode(base64.b64encode(data + b"\x00").decode(), max_bytes=3000)


def _png(mode: str, **save) -> bytes:
    rng = np.random.default_rng(3)
    bands = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4, "P": 1, "I;16": 1}[mode]
    raw = rng.integers(0, 256, (9, 7, bands), dtype=np.uint8)
    img = Image.fromarray(raw[..., 0] if bands == 1 else raw, "L" if bands == 1 else mode)
    if mode in ("P", "I;16"):
        img = img.convert(mode)
    buffer = io.BytesIO()
    img.save(buffer, "PNG", **save)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "mode, save, plain",
    [
        ("L", {}, True),
        ("RGB", {}, True),
        ("RGBA", {}, True),
        ("RGB", {"transparency": (0, 0, 0)}, False),
        ("P", {}, False),
        ("LA", {}, False),
        ("I;16", {}, False),
    ],
)
def test_plain_pngs_skip_pillow_and_decode_as_the_pillow_path_does(mode, save, plain, monkeypatch):
    data = _png(mode, **save)
    assert read_declared(data, max_pixels=10**6).plain_png is plain
    fast = decode_bytes(data, source="raw", **LIMITS)
    opened = []
    monkeypatch.setattr(Image, "open", lambda *a, **k: opened.append(1) or ORIGINAL_OPEN(*a, **k))
    decode_bytes(data, source="raw", **LIMITS)
    assert bool(opened) is not plain  # only what libspng cannot take alone costs a Pillow parse
    # The same pixels as OpenCV's decoder gives the file (the path every other PNG takes).
    reference = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if plain and reference.ndim == 3:
        reference = cv2.cvtColor(
            reference, cv2.COLOR_BGR2RGB if reference.shape[2] == 3 else cv2.COLOR_BGRA2RGBA
        )
    if plain:
        assert np.array_equal(fast.pixels.reshape(reference.shape), reference)


def test_a_plain_png_that_libspng_refuses_is_still_judged_by_the_other_decoders():
    data = _png("RGB")[:60]  # cut inside the image data: libspng stops at the end of the stream
    assert read_declared(data, max_pixels=10**6).plain_png
    with pytest.raises(ModelInputError) as info:
        decode_bytes(data, source="raw", **LIMITS)
    assert (info.value.status, info.value.code) == (415, "not_an_image")


ORIGINAL_OPEN = Image.open
