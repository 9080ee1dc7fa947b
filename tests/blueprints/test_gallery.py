"""The gallery API (/images, /vignette, labels, listing, export) and its faults."""

from __future__ import annotations

import errno
import io
import threading
import time
import zipfile

import numpy as np
import pytest
from PIL import Image

from store import ImageStore
from store.records import ID_PATTERN
from tests.blueprints.gallery_support import (
    EXIF_JPEG,
    build_app,
    photo,
    store_of,
    upload,
    wait_for_thumbnail,
)
from tests.conftest import png_bytes
from training.gallery_export import load_labelled_images

# --- the original contract ------------------------------------------------------------------


def test_upload_answers_201_with_id_and_url_then_metadata_and_thumbnail(gallery):
    data = photo(300, 200)  # over 4x the thumbnail's side: a JPEG is made
    r = upload(gallery, data, name="../../etc/passwd.png", model="numbers")
    assert r.status_code == 201
    body = r.get_json()
    assert set(body) == {"id", "url"}
    assert ID_PATTERN.match(body["id"])
    assert body["url"] == f"/images/{body['id']}" == r.headers["Location"]

    meta = gallery.get(body["url"]).get_json()
    assert meta["id"] == body["id"]
    assert (meta["endpoint"], meta["model"], meta["format"], meta["mime"]) == (
        "upload",
        "numbers",
        "PNG",
        "image/png",
    )
    assert (meta["width"], meta["height"], meta["byte_size"]) == (300, 200, len(data))
    assert meta["original_name"] == "passwd.png"
    assert meta["thumbnail"]["url"] == f"/vignette/{body['id']}"
    assert meta["thumbnail"]["status"] in ("pending", "done")

    r = wait_for_thumbnail(gallery, body["id"])
    assert r.status_code == 200 and r.mimetype == "image/jpeg"
    assert Image.open(io.BytesIO(r.data)).size == (64, 43)
    assert gallery.get(body["url"]).get_json()["thumbnail"]["status"] == "done"
    # Never named by the upload's name: one file, named by id, inside the store.
    store = store_of(gallery)
    assert store.file_path(store.get(body["id"])).name == f"{body['id']}.png"


def test_vignette_is_202_json_while_pending(gallery, monkeypatch):
    store = store_of(gallery)
    monkeypatch.setattr(store, "thumbnails", None)  # no thumbnail job yet
    image_id = upload(gallery).get_json()["id"]
    r = gallery.get(f"/vignette/{image_id}")
    assert r.status_code == 202 and r.is_json
    assert r.headers["Retry-After"] == "1"
    assert r.get_json() == {
        "id": image_id,
        "status": "pending",
        "url": f"/images/{image_id}",
        "retry_after_s": 1,
    }


def test_a_failed_thumbnail_says_why(gallery):
    store = store_of(gallery)
    image_id = upload(gallery).get_json()["id"]
    store.thumbnails.drain(10)
    store.mark_thumbnail(image_id, "failed", "cannot decode the image: truncated")
    r = gallery.get(f"/vignette/{image_id}")
    assert r.status_code == 422
    assert r.get_json()["code"] == "thumbnail_failed"
    assert "truncated" in r.get_json()["error"]


def test_exif_with_bytes_and_gps_comes_back_as_json(gallery):
    r = upload(gallery, EXIF_JPEG.read_bytes(), name="camera.jpg")
    meta = gallery.get(r.get_json()["url"]).get_json()
    assert meta["format"] == "JPEG" and meta["mime"] == "image/jpeg"
    assert meta["exif"]["ExifVersion"] == "0232"
    assert meta["exif"]["UserComment"] == "digit seven, label 7"
    assert set(meta["exif"]["MakerNote"]) == {"base64"}
    assert meta["gps"] == {"latitude": 48.8583, "longitude": 2.2945, "altitude": 35.0}


def test_download_sends_the_original_with_its_content_type(gallery):
    data = EXIF_JPEG.read_bytes()
    image_id = upload(gallery, data, name="x.jpg").get_json()["id"]
    r = gallery.get(f"/images/{image_id}/download")
    assert r.status_code == 200 and r.data == data
    assert r.mimetype == "image/jpeg"
    assert r.headers["Content-Disposition"] == f"attachment; filename={image_id}.jpg"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    inline = gallery.get(f"/images/{image_id}/download?inline=1")
    assert inline.data == data and inline.headers["Content-Disposition"].startswith("inline")


def test_delete_removes_the_image(gallery):
    image_id = upload(gallery).get_json()["id"]
    store = store_of(gallery)
    path = store.file_path(store.get(image_id))
    store.thumbnails.drain(10)
    r = gallery.delete(f"/images/{image_id}")
    assert r.status_code == 204 and r.data == b""
    assert not path.exists() and not store.thumbnail_path(image_id).exists()
    for url in (f"/images/{image_id}", f"/vignette/{image_id}", f"/images/{image_id}/download"):
        assert gallery.get(url).status_code == 404
    assert gallery.delete(f"/images/{image_id}").status_code == 404


# --- bad input ------------------------------------------------------------------------------


BAD_UPLOADS = [
    ("no file", {"data": {"model": "numbers"}, "content_type": "multipart/form-data"}, 400, "missing_image"),
    ("empty file", {"data": {"file": (io.BytesIO(b""), "a.png")}}, 400, "empty_image"),
    ("empty body", {"data": b""}, 400, "empty_body"),
    ("not an image", {"data": {"file": (io.BytesIO(b"hello, not an image"), "a.png")}}, 415, "not_an_image"),
    ("text as image/png", {"data": b"\x89PNG broken", "content_type": "image/png"}, 415, "not_an_image"),
    (
        "label too long",
        {"data": {"file": (io.BytesIO(png_bytes(np.zeros((4, 4), np.uint8))), "a.png"), "label": "x" * 65}},
        400,
        "invalid_field",
    ),
]


@pytest.mark.parametrize(("case", "kwargs", "status", "code"), BAD_UPLOADS, ids=[c[0] for c in BAD_UPLOADS])
def test_bad_uploads_get_clear_json_errors(gallery, case, kwargs, status, code):
    r = gallery.post("/images", **kwargs)
    assert r.status_code == status, r.data
    assert r.is_json and r.get_json()["code"] == code and r.get_json()["error"]
    assert store_of(gallery).list()[1] == 0


def test_an_oversized_upload_is_413(monkeypatch, tmp_path):
    app = build_app(monkeypatch, tmp_path, MAX_IMAGE_BYTES=4096, MAX_CONTENT_LENGTH=64 * 1024)
    client = app.test_client()
    noise = png_bytes(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    assert len(noise) > 4096
    r = upload(client, noise)
    assert r.status_code == 413 and r.get_json()["code"] == "payload_too_large"
    r = upload(client, noise * 20)  # over the request limit itself
    assert r.status_code == 413 and r.is_json
    assert app.extensions["store"].list()[1] == 0
    app.extensions["store"].close()


UNKNOWN = "0" * 32
TRAVERSALS = [
    "zz",
    UNKNOWN,
    "..%2F..%2Fapp.py",
    "%2e%2e%2f%2e%2e%2fconfig.py",
    "..",
    "....%2F....%2Fetc%2Fpasswd",
    "0" * 31 + "%00",
    "%2Fetc%2Fpasswd",
    "..%5C..%5Capp.py",
]


@pytest.mark.parametrize("image_id", TRAVERSALS)
@pytest.mark.parametrize(
    ("method", "pattern"),
    [
        ("get", "/images/{}"),
        ("get", "/vignette/{}"),
        ("get", "/images/{}/download"),
        ("delete", "/images/{}"),
        ("post", "/images/{}/label"),
    ],
)
def test_unknown_and_traversal_ids_are_404_json(gallery, method, pattern, image_id):
    upload(gallery)  # the store is not empty
    r = getattr(gallery, method)(pattern.format(image_id), json={"label": "7"} if method == "post" else None)
    assert r.status_code in (404, 405), r.data
    assert r.is_json and r.get_json()["code"] in ("image_not_found", "not_found", "method_not_allowed")
    assert b"create_app" not in r.data and b"root:" not in r.data


def test_labels_are_recorded_and_validated(gallery):
    image_id = upload(gallery, model="numbers").get_json()["id"]
    r = gallery.post(f"/images/{image_id}/label", json={"label": "7"})
    assert r.status_code == 200
    assert r.get_json()["label"] == "7" and r.get_json()["labelled_at"]
    assert gallery.get(f"/images/{image_id}").get_json()["label"] == "7"
    assert gallery.post(f"/images/{image_id}/label", json={"label": 3}).get_json()["label"] == "3"
    for body, code in (
        ({}, "missing_label"),
        ({"label": ""}, "invalid_label"),
        ({"label": "x" * 65}, "invalid_label"),
    ):
        r = gallery.post(f"/images/{image_id}/label", json=body)
        assert r.status_code == 400 and r.get_json()["code"] == code
    r = gallery.post(f"/images/{image_id}/label", data="not json", content_type="application/json")
    assert r.status_code == 400
    assert gallery.post(f"/images/{image_id}/label", json={"label": None}).get_json()["label"] is None


# --- listing --------------------------------------------------------------------------------


def test_list_pages_and_filters(gallery):
    ids = []
    for n in range(5):
        ids.append(
            upload(gallery, photo(10 + n, 10), model="numbers" if n < 3 else "doodles").get_json()["id"]
        )
        time.sleep(0.002)
    gallery.post(f"/images/{ids[0]}/label", json={"label": "4"})
    body = gallery.get("/images?per_page=2").get_json()
    assert (body["total"], body["pages"], body["page"], body["per_page"]) == (5, 3, 1, 2)
    assert [i["id"] for i in body["items"]] == ids[::-1][:2]
    assert "exif" not in body["items"][0] and body["items"][0]["thumbnail"]["url"]
    assert [i["id"] for i in gallery.get("/images?per_page=2&page=3").get_json()["items"]] == [ids[0]]
    assert gallery.get("/images?model=doodles").get_json()["total"] == 2
    assert [i["id"] for i in gallery.get("/images?label=4").get_json()["items"]] == [ids[0]]
    assert gallery.get("/images?labelled=true").get_json()["total"] == 1
    assert gallery.get("/images?labelled=false&model=numbers").get_json()["total"] == 2
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert gallery.get(f"/images?date={today}").get_json()["total"] == 5
    assert gallery.get("/images?date=2001-01-01").get_json()["total"] == 0
    assert gallery.get("/images?since=2001-01-01T00:00:00Z").get_json()["total"] == 5
    assert gallery.get("/images?until=2001-01-01T00:00:00+02:00").get_json()["total"] == 0
    assert gallery.get("/images?endpoint=upload").get_json()["total"] == 5


@pytest.mark.parametrize(
    "query",
    [
        "page=0",
        "page=x",
        "per_page=101",
        "per_page=0",
        "since=yesterday",
        "date=2024-13-01",
        "labelled=maybe",
    ],
)
def test_bad_list_parameters_are_400(gallery, query):
    r = gallery.get(f"/images?{query}")
    assert r.status_code == 400 and r.get_json()["code"] == "invalid_parameter"


# --- export for retraining ------------------------------------------------------------------


def test_export_gives_the_labelled_images_to_the_training_scripts(gallery, tmp_path):
    seven = upload(gallery, photo(28, 28), model="numbers").get_json()["id"]
    one = upload(gallery, EXIF_JPEG.read_bytes(), name="a.jpg", model="numbers", label="1").get_json()["id"]
    upload(gallery, model="numbers")  # unlabelled: left out
    upload(gallery, model="doodles", label="cat")  # another model: left out
    gallery.post(f"/images/{seven}/label", json={"label": "7"})
    r = gallery.get("/images/export?model=numbers")
    assert r.status_code == 200 and r.mimetype == "application/zip"
    assert r.headers["X-Image-Count"] == "2"
    assert "attachment" in r.headers["Content-Disposition"]
    path = tmp_path / "export.zip"
    path.write_bytes(r.data)
    with zipfile.ZipFile(path) as archive:
        assert sorted(archive.namelist()) == sorted(
            ["labels.csv", f"images/{seven}.png", f"images/{one}.jpg"]
        )
    pairs = load_labelled_images(path)
    assert sorted(label for _, label in pairs) == ["1", "7"]
    by_label = dict((label, img) for img, label in pairs)
    assert by_label["7"].size == (28, 28) and by_label["7"].mode == "RGB"
    assert by_label["1"].size == (64, 48)
    assert gallery.get("/images/export").headers["X-Image-Count"] == "3"


# --- concurrency and faults -----------------------------------------------------------------


def test_concurrent_uploads_get_unique_ids_and_lose_no_row(gallery):
    ids: list[str] = []
    statuses: list[int] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        client = gallery.application.test_client()
        for k in range(8):
            r = upload(client, photo(8 + n, 8 + k))
            with lock:
                statuses.append(r.status_code)
                ids.append(r.get_json().get("id"))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [201] * 48
    assert len(set(ids)) == 48
    assert gallery.get("/images?per_page=100").get_json()["total"] == 48


def test_upload_on_a_full_disk_is_507_and_keeps_nothing(gallery, monkeypatch):
    def no_space(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ImageStore, "_write_file", staticmethod(no_space))
    r = upload(gallery)
    assert r.status_code == 507 and r.get_json()["code"] == "insufficient_storage"
    assert store_of(gallery).list()[1] == 0


def test_upload_with_the_database_down_is_503_json(gallery):
    store = store_of(gallery)
    store.ensure_schema()
    with store.engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TRIGGER broken BEFORE INSERT ON images BEGIN SELECT RAISE(ABORT, 'broken'); END"
        )
    r = upload(gallery)
    assert r.status_code == 503 and r.get_json()["code"] == "store_unavailable"
    assert [p for p in store.image_dir.rglob("*") if p.is_file() and p.name != "lock"] == []
