"""Reading the gallery's export for retraining: the pixels the model saw, with the corrected labels."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from store import ImageStore, NewImage
from training.gallery_export import ExportFormatError, load_labelled_images


def encoded(img: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **options)
    return buf.getvalue()


@pytest.fixture
def store(tmp_path):
    s = ImageStore(f"sqlite:///{tmp_path / 'images.db'}", tmp_path / "images")
    yield s
    s.close()


def test_an_export_round_trips_into_training_pairs(store, tmp_path):
    # A transparent canvas with a black stroke, as the drawing pages send it.
    canvas = Image.new("RGBA", (28, 28), (0, 0, 0, 0))
    canvas.paste((0, 0, 0, 255), (12, 4, 16, 24))
    drawn = store.save(
        NewImage(encoded(canvas, "PNG"), "PNG", 28, 28, endpoint="predict", model="numbers", label="1")
    )
    # A photo whose EXIF says to rotate it for display.
    exif = Image.Exif()
    exif[0x0112] = 6
    photo = encoded(Image.new("RGB", (40, 20), (10, 200, 30)), "JPEG", exif=exif)
    rotated = store.save(
        NewImage(photo, "JPEG", 20, 40, endpoint="upload", model="numbers", label='7,"quoted"')
    )
    store.save(
        NewImage(encoded(canvas, "PNG"), "PNG", 28, 28, endpoint="predict", model="doodles", label="cat")
    )
    path = tmp_path / "export.zip"
    with open(path, "wb") as out:
        assert store.export_zip(out, model="numbers") == 2

    pairs = load_labelled_images(path)
    assert [label for _, label in pairs] == ["1", '7,"quoted"']
    first, second = pairs[0][0], pairs[1][0]
    assert first.mode == "RGB" and first.size == (28, 28)
    pixels = np.asarray(first)
    assert pixels[0, 0].tolist() == [255, 255, 255]  # transparent -> white, as the model saw it
    assert pixels[10, 13].tolist() == [0, 0, 0]
    assert second.size == (20, 40)  # upright
    assert drawn != rotated


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ({"images/a.png": b"x"}, "no labels.csv"),
        ({"labels.csv": b"name,answer\na,b\n"}, "lacks the column"),
        ({"labels.csv": b"file,label\nimages/missing.png,3\n"}, "line 2 names no image"),
        ({"labels.csv": b"file,label\n../../etc/passwd,3\n"}, "line 2 names no image"),
    ],
)
def test_a_file_that_is_not_an_export_is_refused_clearly(tmp_path, members, message):
    path = tmp_path / "bad.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    with pytest.raises(ExportFormatError, match=message):
        load_labelled_images(path)


def test_a_file_that_is_not_a_zip_is_refused(tmp_path):
    path = tmp_path / "not.zip"
    path.write_text("hello")
    with pytest.raises(ExportFormatError, match="not a gallery export zip"):
        load_labelled_images(path)
