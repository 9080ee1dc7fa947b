"""EXIF kept as strict JSON: bytes, rationals, GPS in decimal degrees, broken blocks."""

from __future__ import annotations

import base64
import json

import pytest
from PIL import Image

from store.exif import MAX_EXIF_BLOB, decode_bytes, gps_decimal, jsonable, read_exif
from store.records import NewImage
from tests.store.conftest import EXIF_JPEG, png


def test_exif_with_bytes_and_gps_is_stored_as_json(store):
    data = EXIF_JPEG.read_bytes()
    with Image.open(EXIF_JPEG) as img:
        image_id = store.save(NewImage(data, "JPEG", img.width, img.height, endpoint="upload"))
    exif = store.get(image_id).exif
    json.dumps(exif, allow_nan=False)  # strict JSON, as the API sends it
    assert exif["Make"] == "VisionTestCam"
    assert exif["ExifVersion"] == "0232"  # bytes that are text
    assert exif["UserComment"] == "digit seven, label 7"  # its 8-byte charset prefix removed
    assert base64.b64decode(exif["MakerNote"]["base64"]) == bytes(
        [0xFF, 0xFE, 0x00, 0x81, 0x9C, 0x10, 0x20, 0xC3]
    )
    assert base64.b64decode(exif["ComponentsConfiguration"]["base64"]) == b"\x01\x02\x03\x00"
    assert exif["GPSInfo"]["GPSLatitude"] == [48.0, 51.0, 29.88]
    assert exif["GPS"]["latitude"] == pytest.approx(48.8583, abs=1e-6)
    assert exif["GPS"]["longitude"] == pytest.approx(2.2945, abs=1e-6)
    assert exif["GPS"]["altitude"] == 35.0
    assert store.get(image_id).gps == exif["GPS"]


def test_gps_south_west_and_below_sea_level_are_negative():
    from PIL.TiffImagePlugin import IFDRational as R

    gps = {
        1: "S",
        2: (R(33, 1), R(51, 1), R(54, 1)),
        3: "W",
        4: (R(70, 1), R(30, 1), R(0, 1)),
        5: b"\x01",
        6: R(12, 1),
    }
    assert gps_decimal(gps) == {"latitude": pytest.approx(-33.865), "longitude": -70.5, "altitude": -12.0}
    assert gps_decimal({1: "N", 2: (R(1, 0), R(0, 1), R(0, 1))}) is None  # no longitude
    assert gps_decimal({}) is None


def test_exif_values_become_json():
    assert decode_bytes(b"0230") == "0230"
    assert decode_bytes("héllo".encode()) == "héllo"
    assert decode_bytes(b"\xff\xfe\x00") == {"base64": "//4A"}
    assert decode_bytes(b"\x01\x02") == {"base64": "AQI="}
    assert decode_bytes(b"\x00") == {"base64": "AA=="}
    assert decode_bytes(b"\x00" * (MAX_EXIF_BLOB + 1)) == {
        "base64": None,
        "omitted_bytes": MAX_EXIF_BLOB + 1,
    }
    from PIL.TiffImagePlugin import IFDRational as R

    assert jsonable((R(1, 2), R(1, 0), 3, "a\x00")) == [0.5, None, 3, "a"]
    assert jsonable({1: b"x"}) == {"1": "x"}


def test_images_without_or_with_broken_exif_are_still_kept(sqlite_store):
    assert read_exif(png()) is None
    broken = bytearray(EXIF_JPEG.read_bytes())
    start = broken.find(b"Exif\x00\x00")
    broken[start + 6 : start + 40] = b"\xff" * 34  # garble the TIFF header and first entries
    exif = read_exif(bytes(broken))
    assert exif is None or "error" in exif or isinstance(exif, dict)
    image_id = sqlite_store.save(NewImage(bytes(broken), "JPEG", 64, 48, endpoint="upload"))
    json.dumps(sqlite_store.get(image_id).exif, allow_nan=False)
