"""A small PNG is its own thumbnail: no JPEG made or written, /vignette serves the original bytes;
anything else (larger, heavier, with an EXIF orientation, broken) still gets a JPEG or fails."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from store import ImageStore
from store.records import DONE, FAILED, PENDING
from store.render import LIGHT_BYTES, OWN_THUMBNAIL_BYTES, own_thumbnail
from tests.blueprints.gallery_support import photo, store_of, upload, wait_for_thumbnail
from tests.conftest import data_url, png_bytes

SIZE = 64  # the gallery fixtures' THUMBNAIL_SIZE (tests/blueprints/conftest.py): up to 96 px may be its own,
# and up to 256 px when it is light


def thumbnails_written(store: ImageStore) -> list[str]:
    return sorted(name for _, _, names in os.walk(store.image_dir / "thumbs") for name in names)


def digit_canvas(side: int) -> bytes:
    """A drawn 1 as the digits page exports it: black ink on transparency."""
    rgba = np.zeros((side, side, 4), np.uint8)
    rgba[side // 5 : side * 4 // 5, side * 2 // 5 : side * 3 // 5, 3] = 255
    return png_bytes(rgba)


@pytest.mark.parametrize(
    ("fmt", "width", "height", "byte_size", "own"),
    [
        ("PNG", 96, 96, 2_000, True),
        ("PNG", 97, 40, LIGHT_BYTES + 1, False),  # over 1.5x the thumbnail's side, and not light
        ("PNG", 256, 256, LIGHT_BYTES, True),  # a light drawing up to 4x the thumbnail's side
        ("PNG", 257, 40, 2_000, False),  # over 4x the thumbnail's side
        ("PNG", 40, 96, OWN_THUMBNAIL_BYTES + 1, False),  # small but heavy: a JPEG is smaller
        ("JPEG", 40, 40, 2_000, False),  # may carry an EXIF orientation the browser would apply differently
        ("PNG", 40, 40, 0, False),
    ],
)
def test_the_rule(fmt, width, height, byte_size, own):
    assert own_thumbnail(fmt, width, height, byte_size, SIZE) is own


def test_a_kept_canvas_is_its_own_thumbnail_at_once(gallery):
    canvas = digit_canvas(90)
    r = gallery.post("/api/predict", json={"image": data_url(canvas)})
    assert r.status_code == 200
    store = store_of(gallery)
    assert store.flush(10)
    (record,), _ = store.list()
    assert record.thumb_status == DONE  # in the write itself: no runner, no second row update
    vignette = gallery.get(f"/vignette/{record.id}")
    assert vignette.status_code == 200 and vignette.mimetype == "image/png"
    assert vignette.data == canvas
    assert vignette.headers["X-Content-Type-Options"] == "nosniff"
    assert thumbnails_written(store) == []


def test_a_light_canvas_up_to_4x_the_thumbnail_is_its_own_thumbnail(gallery):
    canvas = digit_canvas(256)
    assert len(canvas) <= LIGHT_BYTES
    r = gallery.post("/api/predict", json={"image": data_url(canvas)})
    assert r.status_code == 200
    store = store_of(gallery)
    assert store.flush(10)
    (record,), _ = store.list()
    assert record.thumb_status == DONE
    vignette = gallery.get(f"/vignette/{record.id}")
    assert vignette.status_code == 200 and vignette.mimetype == "image/png" and vignette.data == canvas
    assert thumbnails_written(store) == []


def test_a_larger_canvas_still_gets_a_jpeg(gallery):
    r = gallery.post("/api/predict", json={"image": data_url(digit_canvas(300))})
    assert r.status_code == 200
    store = store_of(gallery)
    assert store.flush(10)
    (record,), _ = store.list()
    vignette = wait_for_thumbnail(gallery, record.id)
    assert vignette.mimetype == "image/jpeg"
    assert Image.open(io.BytesIO(vignette.data)).size == (64, 64)
    assert thumbnails_written(store) == [f"{record.id}.jpg"]


def test_an_uploaded_small_png_is_checked_in_the_background_then_served_as_is(gallery):
    data = photo(80, 50)
    image_id = upload(gallery, data).get_json()["id"]
    r = wait_for_thumbnail(gallery, image_id)
    assert r.status_code == 200 and r.mimetype == "image/png" and r.data == data
    assert thumbnails_written(store_of(gallery)) == []


def test_a_small_png_with_an_exif_orientation_gets_an_upright_jpeg(gallery):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to show
    buf = io.BytesIO()
    Image.open(io.BytesIO(photo(80, 50))).save(buf, "PNG", exif=exif.tobytes())
    image_id = upload(gallery, buf.getvalue()).get_json()["id"]
    r = wait_for_thumbnail(gallery, image_id)
    assert r.mimetype == "image/jpeg"
    assert Image.open(io.BytesIO(r.data)).size == (40, 64)  # upright: taller than wide


def test_a_tiny_image_carrying_a_large_payload_is_not_served_as_a_thumbnail(gallery):
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", os.urandom(OWN_THUMBNAIL_BYTES).hex())
    buf = io.BytesIO()
    Image.open(io.BytesIO(photo(40, 40))).save(buf, "PNG", pnginfo=info)
    image_id = upload(gallery, buf.getvalue()).get_json()["id"]
    r = wait_for_thumbnail(gallery, image_id)
    assert r.mimetype == "image/jpeg" and len(r.data) < 4096


def test_a_broken_small_png_fails_instead_of_being_served(gallery):
    store = store_of(gallery)
    data = photo(40, 40)
    broken = data[:-40] + bytes(40)  # the image data and IEND overwritten
    image_id = upload(gallery, data).get_json()["id"]
    wait_for_thumbnail(gallery, image_id)
    # A second copy, written by the store directly (as a journal recovery would), broken on disk.
    from tests.store.conftest import new_image

    other = store.save(new_image(data))
    store.file_path(store.get(other)).write_bytes(broken)
    store.thumbnails.schedule(other)
    assert store.thumbnails.drain(10)
    assert store.get(other).thumb_status == FAILED


def test_a_smaller_thumbnail_size_later_makes_the_jpeg_after_all(gallery):
    store = store_of(gallery)
    data = photo(80, 50)
    image_id = upload(gallery, data).get_json()["id"]
    assert wait_for_thumbnail(gallery, image_id).mimetype == "image/png"
    store.thumbnail_size = 16  # the service restarted with THUMBNAIL_SIZE=16: 80 px is over 4x that
    first = gallery.get(f"/vignette/{image_id}")
    assert first.status_code == 202 and store.get(image_id).thumb_status in (PENDING, DONE)
    r = wait_for_thumbnail(gallery, image_id)
    assert r.mimetype == "image/jpeg" and Image.open(io.BytesIO(r.data)).size == (16, 10)
