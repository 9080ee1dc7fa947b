"""The gallery API (/images, /vignette, labels, export), the /gallery page, saving from predictions,
and thumbnails on Celery with a real Redis."""

from __future__ import annotations

import errno
import io
import json
import shutil
import threading
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from apispec import APISpec
from PIL import Image
from prometheus_client import REGISTRY

from app import create_app
from blueprints.image_input import keep_image
from models.image import InputImage
from store import ImageStore
from store.records import ID_PATTERN
from tests.conftest import data_url, hide_environment, png_bytes
from tests.store_servers import free_port, start_celery_worker, start_redis, stop_process
from training.gallery_export import load_labelled_images

EXIF_JPEG = Path(__file__).parents[1] / "data" / "gallery" / "exif_gps.jpg"


def failures(reason: str) -> float:
    """Return the image_store_failures_total count for a reason."""
    return REGISTRY.get_sample_value("image_store_failures_total", {"reason": reason}) or 0.0


def photo(width: int = 120, height: int = 80) -> bytes:
    """A small RGB PNG with some detail."""
    y, x = np.mgrid[0:height, 0:width]
    return png_bytes(np.stack([x % 256, y % 256, (x * y) % 256], axis=-1).astype(np.uint8))


def upload(client, data: bytes = b"", name: str = "photo.png", **fields):
    """POST /images with a multipart file."""
    form = {"file": (io.BytesIO(data or photo()), name), **fields}
    return client.post("/images", data=form, content_type="multipart/form-data")


def wait_for_thumbnail(client, image_id: str, timeout: float = 30.0):
    """Poll /vignette until it is not 202; return the last response."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/vignette/{image_id}")
        if response.status_code != 202 or time.monotonic() > deadline:
            return response
        time.sleep(0.05)


def build_app(monkeypatch, tmp_path: Path, **overrides):
    """Build an app with its own store in tmp_path, ignoring the developer's environment."""
    hide_environment(monkeypatch)
    config = {
        "LOG_LEVEL": "WARNING",
        "SAVE_IMAGES": True,
        "IMAGE_DIR": str(tmp_path / "saved"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'images.db'}",
        "THUMBNAIL_SIZE": 64,
    }
    config.update(overrides)
    return create_app(config)


@pytest.fixture(scope="module")
def shared_app(tmp_path_factory):
    """One app for the module (loading every model per test would dominate the run time)."""
    with pytest.MonkeyPatch.context() as mp:
        app = build_app(mp, tmp_path_factory.mktemp("gallery"))
    yield app
    app.extensions["store"].close()


@pytest.fixture
def gallery_app(shared_app, tmp_path):
    """The shared app with a fresh, empty store in tmp_path, built as init_app builds it."""
    original = shared_app.extensions["store"]
    store = ImageStore(f"sqlite:///{tmp_path / 'images.db'}", tmp_path / "saved", thumbnail_size=64)
    store.start_thumbnails()
    shared_app.extensions["store"] = store
    yield shared_app
    store.close()
    shared_app.extensions["store"] = original


@pytest.fixture
def gallery(gallery_app):
    """A test client of gallery_app."""
    return gallery_app.test_client()


def store_of(client) -> ImageStore:
    return client.application.extensions["store"]


# --- the original contract ------------------------------------------------------------------


def test_upload_answers_201_with_id_and_url_then_metadata_and_thumbnail(gallery):
    data = photo(120, 80)
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
    assert (meta["width"], meta["height"], meta["byte_size"]) == (120, 80, len(data))
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


# --- saving what the models receive ---------------------------------------------------------


def test_keep_image_saves_in_the_background_with_the_prediction(gallery_app):
    image = InputImage(pixels=np.full((28, 28), 255, np.uint8), format="ARRAY", source="legacy_array")
    with gallery_app.test_request_context("/api/predict", method="POST"):
        keep_image(image, endpoint="predict", model="numbers", prediction="7", confidence=0.97)
    store = gallery_app.extensions["store"]
    assert store.flush(10)
    items, total = store.list()
    assert total == 1
    record = items[0]
    assert (record.endpoint, record.model, record.prediction, record.confidence) == (
        "predict",
        "numbers",
        "7",
        0.97,
    )
    assert (record.format, record.width, record.height) == ("PNG", 28, 28)


def test_keep_image_does_nothing_when_saving_is_off(monkeypatch, tmp_path):
    app = build_app(monkeypatch, tmp_path, SAVE_IMAGES=False)
    image = InputImage(pixels=np.zeros((4, 4), np.uint8), format="ARRAY", source="legacy_array")
    with app.test_request_context("/api/predict", method="POST"):
        keep_image(image, endpoint="predict", model="numbers", prediction="1", confidence=0.5)
    store = app.extensions["store"]
    assert store.flush(5) and store.list()[1] == 0
    store.close()


def test_a_full_disk_never_fails_the_prediction(gallery, monkeypatch):
    if "numbers" not in gallery.application.extensions["registry"].models:
        pytest.skip("the numbers model is not loaded, so /api/predict cannot run")

    def no_space(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ImageStore, "_write_file", staticmethod(no_space))
    before = failures("disk")
    canvas = np.full((280, 280), 255, np.uint8)
    cv2.polylines(canvas, [np.array([[70, 50], [210, 50], [130, 230]], np.int32)], False, 0, 18, cv2.LINE_AA)
    r = gallery.post("/api/predict", json={"image": data_url(png_bytes(canvas))})
    assert r.status_code in (200, 422)
    assert "prediction" in r.get_json()
    store = store_of(gallery)
    assert store.flush(10)
    assert failures("disk") == before + 1
    assert store.list()[1] == 0
    monkeypatch.undo()
    r = gallery.post("/api/predict", json={"image": data_url(png_bytes(canvas))})
    assert store.flush(10)
    items, total = store.list()
    assert (
        total == 1 and items[0].model == "numbers" and items[0].prediction == str(r.get_json()["prediction"])
    )


# --- the page and the API description -------------------------------------------------------


def test_gallery_page_renders_with_local_assets(gallery):
    upload(gallery, model="numbers")
    r = gallery.get("/gallery")
    assert r.status_code == 200 and r.mimetype == "text/html"
    page = r.get_data(as_text=True)
    assert 'id="gallery-grid"' in page and "js/gallery.js" in page and "css/gallery.css" in page
    assert '<option value="numbers">numbers</option>' in page
    assert "http://" not in page.replace("http://www.w3.org", "") and "https://" not in page
    assert gallery.get("/static/js/gallery.js").status_code == 200


def test_openapi_describes_the_gallery(gallery_app):
    from apispec.yaml_utils import load_operations_from_docstring

    from blueprints import gallery as module
    from blueprints.openapi import add_schema

    documented = {}
    for rule in gallery_app.url_map.iter_rules():
        if rule.endpoint.startswith("gallery.") and rule.endpoint != "gallery.gallery_page":
            operations = load_operations_from_docstring(gallery_app.view_functions[rule.endpoint].__doc__)
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                path = rule.rule.replace("<image_id:image_id>", "<image_id>")  # the id converter
                documented[(path, method.lower())] = operations[method.lower()]
    assert set(documented) == {
        ("/images", "post"),
        ("/images", "get"),
        ("/images/<image_id>", "get"),
        ("/images/<image_id>", "delete"),
        ("/images/<image_id>/download", "get"),
        ("/images/<image_id>/label", "post"),
        ("/images/export", "get"),
        ("/vignette/<image_id>", "get"),
    }
    assert all(op["summary"] and op["responses"] for op in documented.values())
    assert set(documented[("/images", "post")]["responses"]) == {201, 400, 401, 403, 413, 415, 503}
    for guarded in (
        ("/images/<image_id>", "delete"),
        ("/images/<image_id>/label", "post"),
        ("/images/export", "get"),
    ):
        assert {401, 403} <= set(documented[guarded]["responses"]), guarded
    assert 202 in documented[("/vignette/<image_id>", "get")]["responses"]
    spec = APISpec(title="t", version="1", openapi_version="3.0.3")
    for model in module.SCHEMAS:
        add_schema(spec, model)
    assert {"ImageCreated", "ImageMeta", "ImagePage", "ThumbnailPending", "LabelRequest"} <= set(
        spec.to_dict()["components"]["schemas"]
    )


# --- Celery on a real Redis -----------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    """redis-server on a free loopback port, or a skip with the reason."""
    server = start_redis(tmp_path_factory.mktemp("redis"))
    if isinstance(server, str):
        pytest.skip(server)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def celery_setup(redis_server, tmp_path_factory):
    """A real `celery -A store.celery_app worker` on that Redis, sharing a store folder and database."""
    folder = tmp_path_factory.mktemp("celery-store")
    settings = {
        "CELERY_BROKER_URL": redis_server.url,
        "DATABASE_URL": f"sqlite:///{folder / 'images.db'}",
        "VISION_IMAGE_DIR": str(folder / "saved"),
        "VISION_THUMBNAIL_SIZE": "64",
    }
    # The schema exists before the worker opens the database (as it would after the web app starts).
    ImageStore(settings["DATABASE_URL"], folder / "saved").ensure_schema()
    log = folder / "worker.log"
    worker = start_celery_worker(settings, log)
    if isinstance(worker, str):
        pytest.skip(worker)
    yield settings, log
    stop_process(worker)


@pytest.mark.redis
def test_celery_worker_makes_the_thumbnail(celery_setup, monkeypatch, tmp_path):
    settings, log = celery_setup
    app = build_app(
        monkeypatch,
        tmp_path,
        CELERY_BROKER_URL=settings["CELERY_BROKER_URL"],
        DATABASE_URL=settings["DATABASE_URL"],
        IMAGE_DIR=settings["VISION_IMAGE_DIR"],
    )
    client = app.test_client()
    store = app.extensions["store"]
    assert store.thumbnails.mode == "celery"
    started = time.perf_counter()
    r = upload(client, photo(200, 100))
    elapsed = time.perf_counter() - started
    assert r.status_code == 201
    image_id = r.get_json()["id"]
    v = wait_for_thumbnail(client, image_id, timeout=60)
    assert v.status_code == 200, log.read_text()[-2000:]
    assert Image.open(io.BytesIO(v.data)).size == (64, 32)
    # Made by the worker process, not by this one's fallback pool.
    assert store.thumbnails.local.threads == []
    # The worker logs "succeeded" after the task returns, a moment after the row says done.
    deadline = time.monotonic() + 10
    while "succeeded" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    worker_log = log.read_text()
    assert "vision.thumbnail[" in worker_log and "succeeded" in worker_log
    assert elapsed < 2.0
    store.close()


@pytest.mark.redis
def test_broker_down_upload_still_201_and_thumbnail_done_later(monkeypatch, tmp_path):
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    app = build_app(monkeypatch, tmp_path, CELERY_BROKER_URL=dead)
    client = app.test_client()
    before = failures("broker_unavailable")
    started = time.perf_counter()
    r = upload(client)
    elapsed = time.perf_counter() - started
    assert r.status_code == 201
    assert elapsed < 1.0  # the broker is tried off the request
    v = wait_for_thumbnail(client, r.get_json()["id"], timeout=30)
    assert v.status_code == 200 and v.mimetype == "image/jpeg"
    assert failures("broker_unavailable") == before + 1
    app.extensions["store"].close()


@pytest.mark.redis
def test_a_broker_that_comes_back_gets_the_next_tasks(monkeypatch, tmp_path):
    import redis

    port = free_port()
    app = build_app(monkeypatch, tmp_path, CELERY_BROKER_URL=f"redis://127.0.0.1:{port}/0")
    client = app.test_client()
    store = app.extensions["store"]
    first = upload(client).get_json()["id"]
    assert wait_for_thumbnail(client, first).status_code == 200  # made here while the broker is down

    server = start_redis(tmp_path / "redis", port=port)
    if isinstance(server, str):
        pytest.skip(server)
    try:
        store.thumbnails.broker_retry_seconds = 0
        store.thumbnails._broker_down_until = 0.0  # as when the retry pause has passed
        second = upload(client).get_json()["id"]
        assert store.thumbnails.drain(10)
        queue = redis.Redis.from_url(server.url)
        messages = [json.loads(m) for m in queue.lrange("celery", 0, -1)]
        assert [(m["headers"]["task"], m["headers"]["argsrepr"]) for m in messages] == [
            ("vision.thumbnail", repr([second]))
        ]
        # No worker listens on this broker: the row stays pending until one does.
        assert client.get(f"/vignette/{second}").status_code == 202
        queue.close()
    finally:
        server.stop()
        store.close()
        shutil.rmtree(tmp_path / "redis", ignore_errors=True)
