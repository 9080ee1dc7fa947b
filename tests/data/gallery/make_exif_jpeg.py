"""Write exif_gps.jpg: a small JPEG whose EXIF has text, bytes values and a GPS position.

Run from the repo root: `.venv/bin/python tests/data/gallery/make_exif_jpeg.py`. The position is
48°51'29.88"N 2°17'40.20"E (48.8583, 2.2945), altitude 35 m; UserComment and ExifVersion are
bytes that are valid text, MakerNote and ComponentsConfiguration bytes that are not.
"""

from pathlib import Path

import numpy as np
from PIL import ExifTags, Image
from PIL.TiffImagePlugin import IFDRational

HERE = Path(__file__).parent


def build(path: Path = HERE / "exif_gps.jpg") -> Path:
    """Write the fixture JPEG and return its path."""
    y, x = np.mgrid[0:48, 0:64]
    pixels = np.stack([x * 4, y * 5, (x + y) * 2], axis=-1).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "VisionTestCam"
    exif[ExifTags.Base.Model] = "Fixture 1"
    exif[ExifTags.Base.Orientation] = 1
    exif[ExifTags.Base.DateTime] = "2024:05:01 12:34:56"
    sub = exif.get_ifd(ExifTags.IFD.Exif)
    sub[ExifTags.Base.ExifVersion] = b"0232"
    sub[ExifTags.Base.ComponentsConfiguration] = b"\x01\x02\x03\x00"
    sub[ExifTags.Base.UserComment] = b"ASCII\x00\x00\x00digit seven, label 7"
    sub[ExifTags.Base.MakerNote] = bytes([0xFF, 0xFE, 0x00, 0x81, 0x9C, 0x10, 0x20, 0xC3])
    sub[ExifTags.Base.DateTimeOriginal] = "2024:05:01 12:34:56"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSVersionID] = b"\x02\x03\x00\x00"
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (IFDRational(48, 1), IFDRational(51, 1), IFDRational(2988, 100))
    gps[ExifTags.GPS.GPSLongitudeRef] = "E"
    gps[ExifTags.GPS.GPSLongitude] = (IFDRational(2, 1), IFDRational(17, 1), IFDRational(4020, 100))
    gps[ExifTags.GPS.GPSAltitudeRef] = 0
    gps[ExifTags.GPS.GPSAltitude] = IFDRational(35, 1)
    image.save(path, "JPEG", quality=80, exif=exif)
    return path


if __name__ == "__main__":
    print(build())
