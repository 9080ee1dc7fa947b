"""The image store: atomic file + row writes, EXIF as JSON, ids, faults, thumbnails, SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import errno
import io
import json
import multiprocessing
import shutil
import threading
import time
import uuid
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from prometheus_client import REGISTRY
from sqlalchemy import create_engine, event, text, update

import models.store as store_module
from blueprints.image_input import InputImage
from models.store import (
    DONE,
    FAILED,
    PENDING,
    SCHEMA_VERSION,
    ImageStore,
    InvalidImageId,
    NewImage,
    StoreError,
    clean_label,
    decode_bytes,
    gps_decimal,
    images,
    jsonable,
    migrate,
    new_id,
    read_exif,
    schema_version,
    schema_version_of,
    validate_id,
)
from models.tasks import Thumbnails, make_thumbnail, start_thumbnails
from tests.store_servers import save_in_process, start_postgres

EXIF_JPEG = Path(__file__).parents[1] / "data" / "gallery" / "exif_gps.jpg"

TRAVERSAL_IDS = [
    "../../etc/passwd",
    "..",
    "../" + "0" * 29,
    "0" * 31 + "/",
    "0" * 30 + "/x",
    "0" * 16 + "\\" + "0" * 15,
    "%2e%2e%2f" + "0" * 23,
    "0" * 31 + "\x00",
    "0" * 31,
    "0" * 33,
    "A" * 32,
    "g" * 32,
    "/etc/passwd",
    "",
]


def failures(reason: str) -> float:
    """Return the image_store_failures_total count for a reason."""
    return REGISTRY.get_sample_value("image_store_failures_total", {"reason": reason}) or 0.0


def png(width: int = 20, height: int = 10, mode: str = "L", value: int = 128) -> bytes:
    """Encode a flat image as PNG."""
    buf = io.BytesIO()
    Image.new(mode, (width, height), value).save(buf, format="PNG")
    return buf.getvalue()


def new_image(data: bytes | None = None, **fields) -> NewImage:
    """A small PNG to keep, with defaults for the metadata."""
    data = png() if data is None else data
    with Image.open(io.BytesIO(data)) as img:
        width, height, fmt = img.width, img.height, img.format
    values = {"endpoint": "numbers.predict", "model": "numbers", "prediction": "7", "confidence": 0.93}
    values.update(fields)
    return NewImage(data=data, format=fmt, width=width, height=height, **values)


def stored_files(root: Path) -> list[Path]:
    """Every file under the store's folder (temporary ones included)."""
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL cluster on loopback, or a skip with the reason."""
    server = start_postgres()
    if isinstance(server, str):
        pytest.skip(server)
    yield server
    server.stop()
    shutil.rmtree(server.workdir, ignore_errors=True)


BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=[pytest.mark.postgres]),
]


@pytest.fixture(params=BACKENDS)
def database_url(request, tmp_path):
    """A fresh, empty database: a SQLite file, or a new database on the PostgreSQL cluster."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'images.db'}"
        return
    server = request.getfixturevalue("postgres_server")
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    yield server.url.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()


@pytest.fixture
def store(database_url, tmp_path):
    """A store on each backend, closed after the test."""
    s = ImageStore(database_url, tmp_path / "images", thumbnail_size=64)
    yield s
    s.close()


@pytest.fixture
def sqlite_store(tmp_path):
    """A SQLite store, for the faults that need SQLite's own tools."""
    s = ImageStore(f"sqlite:///{tmp_path / 'images.db'}", tmp_path / "images", thumbnail_size=64)
    yield s
    s.close()


# --- ids ------------------------------------------------------------------------------------


def test_new_ids_are_unique_hex_and_sort_by_time():
    ids = [new_id() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    assert all(validate_id(i) == i for i in ids)
    assert new_id(now=1_000_000.0) < new_id(now=1_000_000.002)


@pytest.mark.parametrize("bad", TRAVERSAL_IDS)
def test_ids_that_could_name_another_path_are_refused(sqlite_store, bad):
    with pytest.raises(InvalidImageId):
        validate_id(bad)
    with pytest.raises(InvalidImageId):
        sqlite_store.thumbnail_path(bad)
    with pytest.raises(InvalidImageId):
        sqlite_store.relative_path(bad, "PNG")
    assert sqlite_store.get(bad) is None
    assert sqlite_store.set_label(bad, "7") is None
    assert sqlite_store.delete(bad) is False


def test_a_file_is_named_by_its_id_never_by_the_upload_name(sqlite_store):
    image_id = sqlite_store.save(new_image(original_name="../../../../tmp/evil.png"))
    record = sqlite_store.get(image_id)
    path = sqlite_store.file_path(record)
    assert path == sqlite_store.image_dir / image_id[:2] / f"{image_id}.png"
    assert path.read_bytes() == new_image().data
    assert record.original_name == "../../../../tmp/evil.png"  # metadata only
    assert [p.name for p in stored_files(sqlite_store.image_dir)] == [f"{image_id}.png"]


# --- rows -----------------------------------------------------------------------------------


def test_save_writes_the_file_and_the_row(store):
    data = png(30, 12, "RGB", 200)
    image_id = store.save(new_image(data, prediction="3", confidence=0.5, label="8"))
    record = store.get(image_id)
    assert record.id == image_id
    assert (record.endpoint, record.model, record.prediction, record.confidence) == (
        "numbers.predict",
        "numbers",
        "3",
        0.5,
    )
    assert record.label == "8" and record.labelled_at is not None
    assert (record.format, record.mime, record.width, record.height) == ("PNG", "image/png", 30, 12)
    assert record.byte_size == len(data)
    assert record.sha256 == __import__("hashlib").sha256(data).hexdigest()
    assert record.thumb_status == PENDING and record.thumb_attempts == 0
    assert record.created_at.tzinfo is not None
    assert abs(record.created_at - datetime.now(UTC)) < timedelta(minutes=1)
    assert store.file_path(record).read_bytes() == data


def test_list_filters_and_pages_newest_first(store):
    ids = []
    for n in range(7):
        model = "numbers" if n % 2 == 0 else "doodles"
        ids.append(store.save(new_image(model=model, label=str(n) if n < 3 else None)))
        time.sleep(0.002)  # distinct milliseconds, so the order is certain
    items, total = store.list(per_page=3)
    assert total == 7 and [r.id for r in items] == ids[::-1][:3]
    items, total = store.list(page=3, per_page=3)
    assert [r.id for r in items] == [ids[0]]
    assert store.list(model="numbers")[1] == 4
    assert {r.id for r in store.list(model="doodles")[0]} == {ids[1], ids[3], ids[5]}
    assert [r.id for r in store.list(label="1")[0]] == [ids[1]]
    assert store.list(labelled=True)[1] == 3 and store.list(labelled=False)[1] == 4
    assert store.list(since=datetime.now(UTC) + timedelta(hours=1))[1] == 0
    assert store.list(until=datetime.now(UTC) + timedelta(hours=1))[1] == 7
    assert store.list(since=datetime.now(UTC) - timedelta(hours=1), model="numbers")[1] == 4
    assert store.models() == ["doodles", "numbers"]


def test_labels_are_set_cleared_and_validated(store):
    image_id = store.save(new_image())
    assert store.set_label(image_id, " 7 ").label == "7"
    assert store.set_label(image_id, 4).label == "4"
    assert store.set_label(image_id, None).label is None
    assert store.set_label(new_id(), "7") is None
    for bad in ("", "   ", "x" * 65, "a\nb", True, 1.5, ["7"]):
        with pytest.raises(ValueError):
            clean_label(bad)


def test_delete_removes_row_file_and_thumbnail(store):
    start_thumbnails(store)
    image_id = store.save(new_image())
    assert store.thumbnails.drain(10)
    record = store.get(image_id)
    assert record.thumb_status == DONE
    assert store.thumbnail_path(image_id).is_file()
    assert store.delete(image_id) is True
    assert store.get(image_id) is None
    assert stored_files(store.image_dir) == []
    assert store.delete(image_id) is False


def test_export_zip_holds_the_labelled_images_of_one_model(store):
    a = store.save(new_image(png(8, 8, "L", 10), model="numbers", label="1"))
    store.save(new_image(model="numbers"))  # not labelled: not exported
    store.save(new_image(model="doodles", label="cat"))
    buf = io.BytesIO()
    assert store.export_zip(buf, model="numbers") == 1
    with zipfile.ZipFile(buf) as archive:
        assert sorted(archive.namelist()) == sorted(["labels.csv", f"images/{a}.png"])
        rows = archive.read("labels.csv").decode().splitlines()
        assert rows[0].split(",")[:3] == ["file", "label", "id"]
        assert rows[1].startswith(f"images/{a}.png,1,{a},numbers,")
        assert archive.read(f"images/{a}.png") == png(8, 8, "L", 10)
    assert store.export_zip(io.BytesIO()) == 2


# --- concurrency ----------------------------------------------------------------------------


def test_concurrent_saves_get_unique_ids_and_lose_no_row(store):
    ids: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        try:
            for k in range(15):
                image_id = store.save(new_image(png(4 + n, 4 + k, "L", (n * 15 + k) % 256)))
                with lock:
                    ids.append(image_id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(ids) == len(set(ids)) == 120
    assert store.list(per_page=100)[1] == 120
    assert len(stored_files(store.image_dir)) == 120
    assert all(store.file_path(store.get(i)).is_file() for i in ids)


@pytest.mark.slow
def test_concurrent_saves_from_several_processes(store):
    store.ensure_schema()
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [
        ctx.Process(target=save_in_process, args=(store.database_url, str(store.image_dir), 12, n, out))
        for n in range(3)
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    assert all(isinstance(r, list) for r in results), results
    ids = [i for r in results for i in r]
    assert len(ids) == len(set(ids)) == 36
    assert store.list(per_page=100)[1] == 36


def test_submit_writes_in_the_background(store):
    frames = [np.full((6, 9), v, np.uint8) for v in range(0, 250, 10)]
    ids = [
        store.submit(
            InputImage(pixels=f, format="ARRAY", source="legacy_array"),
            endpoint="ocr.predict",
            model="ocr",
            prediction=["1", "2"],
            confidence=None,
        )
        for f in frames
    ]
    assert store.flush(30)
    assert all(ids)
    records = [store.get(i) for i in ids]
    assert all(r is not None for r in records)
    assert {(r.format, r.width, r.height, r.prediction, r.endpoint) for r in records} == {
        ("PNG", 9, 6, "1 2", "ocr.predict")
    }
    first = Image.open(store.file_path(records[0]))
    assert np.array_equal(np.asarray(first), frames[0])


def test_concurrent_submits_lose_no_row(sqlite_store):
    image = InputImage(pixels=np.zeros((4, 4), np.uint8), format="PNG", source="raw", data=png(4, 4))
    ids: list[str | None] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(10):
            image_id = sqlite_store.submit(image, endpoint="e", model="m", prediction="1", confidence=0.9)
            with lock:
                ids.append(image_id)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sqlite_store.flush(60)
    assert None not in ids and len(set(ids)) == 80
    assert sqlite_store.list(per_page=1)[1] == 80


def gated_store(tmp_path: Path, monkeypatch, queue_wait: float) -> tuple[ImageStore, threading.Event]:
    """A store with a 2-slot write queue whose writer waits for the returned event."""
    s = ImageStore(
        f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "img", queue_size=2, queue_wait=queue_wait
    )
    gate = threading.Event()
    real = s._write_job
    monkeypatch.setattr(s, "_write_job", lambda job: (gate.wait(10), real(job)))
    return s, gate


def test_a_full_queue_without_wait_drops_and_counts_instead_of_blocking(tmp_path, monkeypatch):
    s, gate = gated_store(tmp_path, monkeypatch, queue_wait=0)
    image = InputImage(pixels=np.zeros((4, 4), np.uint8), format="PNG", source="raw", data=png(4, 4))
    before = failures("queue_full")
    started = time.perf_counter()
    results = [s.submit(image, endpoint="e", model="m", prediction="1", confidence=1.0) for _ in range(6)]
    elapsed = time.perf_counter() - started
    gate.set()
    assert s.flush(10)
    assert elapsed < 0.5  # never waits for the writer
    assert results.count(None) >= 3
    assert failures("queue_full") - before == results.count(None)
    assert s.list()[1] == 6 - results.count(None)
    s.close()


def test_a_full_queue_makes_the_request_wait_for_a_slot_and_keeps_every_image(tmp_path, monkeypatch):
    s, gate = gated_store(tmp_path, monkeypatch, queue_wait=5)
    image = InputImage(pixels=np.zeros((4, 4), np.uint8), format="PNG", source="raw", data=png(4, 4))
    before = failures("queue_full")
    threading.Timer(0.3, gate.set).start()  # the writer catches up after 0.3 s
    started = time.perf_counter()
    results = [s.submit(image, endpoint="e", model="m", prediction="1", confidence=1.0) for _ in range(6)]
    elapsed = time.perf_counter() - started
    assert s.flush(10)
    assert None not in results and failures("queue_full") == before
    assert 0.2 < elapsed < 5  # waited for the writer, not for the whole timeout
    assert s.list()[1] == 6
    s.close()


def test_a_queued_upload_holds_its_bytes_not_its_decoded_pixels(tmp_path, monkeypatch):
    s = ImageStore(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "img")
    monkeypatch.setattr(s, "_start_writer", lambda: None)  # keep the jobs in the queue to look at
    upload = InputImage(
        pixels=np.zeros((400, 400, 4), np.uint8), format="PNG", source="raw", data=png(400, 400)
    )
    array = InputImage(pixels=np.zeros((6, 9), np.uint8), format="ARRAY", source="legacy_array")
    s.submit(upload, endpoint="e", model="m", prediction="1", confidence=1.0)
    s.submit(array, endpoint="e", model="m", prediction="1", confidence=1.0)
    queued = [s._queue.get_nowait(), s._queue.get_nowait()]
    # An upload's 640 KB of pixels must not wait in a queue of 256 jobs; its few KB of PNG do.
    assert queued[0].image is None and queued[0].data == upload.data
    assert (queued[0].format, queued[0].width, queued[0].height) == ("PNG", 400, 400)
    # A legacy array has no bytes yet: it is encoded by the writer, as PNG.
    assert queued[1].data is None and queued[1].image is array and queued[1].format == "PNG"


# --- faults: both or neither ----------------------------------------------------------------


def test_a_full_disk_keeps_neither_file_nor_row_and_is_counted(sqlite_store, monkeypatch):
    def no_space(path, data):
        Path(path).write_bytes(data[:3])  # a partial write, as a full disk leaves it
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ImageStore, "_write_file", staticmethod(no_space))
    with pytest.raises(StoreError) as info:
        sqlite_store.save(new_image())
    assert info.value.reason == "disk"
    before = failures("disk")
    image = InputImage(pixels=np.zeros((4, 4), np.uint8), format="PNG", source="raw", data=png(4, 4))
    assert sqlite_store.submit(image, endpoint="e", model="m", prediction="1", confidence=1.0)
    assert sqlite_store.flush(10)
    assert failures("disk") == before + 1
    assert sqlite_store.list()[1] == 0
    assert stored_files(sqlite_store.image_dir) == []


def test_a_failed_rename_rolls_the_row_back(sqlite_store, monkeypatch):
    def refuse(src, dst):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(store_module.os, "replace", refuse)
    with pytest.raises(StoreError) as info:
        sqlite_store.save(new_image())
    assert info.value.reason == "disk"
    assert sqlite_store.list()[1] == 0
    assert stored_files(sqlite_store.image_dir) == []


def test_a_database_error_keeps_no_file_and_is_counted(sqlite_store):
    sqlite_store.ensure_schema()
    with sqlite_store.engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TRIGGER broken BEFORE INSERT ON images BEGIN SELECT RAISE(ABORT, 'database is broken'); END"
        )
    with pytest.raises(StoreError) as info:
        sqlite_store.save(new_image())
    assert info.value.reason == "database"
    before = failures("database")
    image = InputImage(pixels=np.zeros((4, 4), np.uint8), format="PNG", source="raw", data=png(4, 4))
    sqlite_store.submit(image, endpoint="e", model="m", prediction="1", confidence=1.0)
    assert sqlite_store.flush(10)
    assert failures("database") == before + 1
    assert stored_files(sqlite_store.image_dir) == []


def test_a_failed_commit_after_the_rename_removes_the_file(sqlite_store):
    sqlite_store.ensure_schema()

    def fail_commit(conn):
        raise RuntimeError("commit failed")  # SQLAlchemy wraps it as a database error

    event.listen(sqlite_store.engine, "commit", fail_commit)
    with pytest.raises((StoreError, RuntimeError)):
        sqlite_store.save(new_image())
    event.remove(sqlite_store.engine, "commit", fail_commit)
    assert sqlite_store.list()[1] == 0
    assert stored_files(sqlite_store.image_dir) == []


def test_an_unreachable_database_fails_the_save_not_the_caller(tmp_path):
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the database folder should be")
    s = ImageStore(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "img")
    s.engine.dispose()
    s.engine = create_engine(f"sqlite:///{blocked}/x.db")  # a path under a file: cannot open
    with pytest.raises(StoreError) as info:
        s.save(new_image())
    assert info.value.reason == "database"
    before = failures("database")
    image = InputImage(pixels=np.zeros((4, 4), np.uint8), format="PNG", source="raw", data=png(4, 4))
    assert s.submit(image, endpoint="e", model="m", prediction="1", confidence=1.0)
    assert s.flush(10)
    assert failures("database") == before + 1
    assert stored_files(tmp_path / "img") == []
    s.close()


# --- schema ---------------------------------------------------------------------------------


def test_the_schema_is_versioned_and_migrated_once(store):
    assert schema_version_of(store.engine) == 0
    assert migrate(store.engine) == 0
    assert schema_version_of(store.engine) == SCHEMA_VERSION
    assert migrate(store.engine) == SCHEMA_VERSION  # nothing left to do
    with store.engine.begin() as conn:
        conn.execute(update(schema_version).values(version=SCHEMA_VERSION + 1))
    with pytest.raises(StoreError, match="newer than this code"):
        migrate(store.engine)


def test_workers_starting_together_migrate_once(store):
    engines = [create_engine(store.database_url) for _ in range(4)]
    if store.engine.dialect.name == "sqlite":
        for engine in engines:
            event.listen(engine, "connect", store_module._sqlite_connect)
            event.listen(engine, "begin", store_module._sqlite_begin)
    found: list[int] = []
    errors: list[BaseException] = []

    def run(engine) -> None:
        try:
            found.append(migrate(engine))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for engine in engines:
        engine.dispose()
    assert errors == []
    assert sorted(found) == [0] + [SCHEMA_VERSION] * 3
    assert schema_version_of(store.engine) == SCHEMA_VERSION


# --- EXIF -----------------------------------------------------------------------------------


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
    assert decode_bytes(b"\x00" * (store_module.MAX_EXIF_BLOB + 1)) == {
        "base64": None,
        "omitted_bytes": store_module.MAX_EXIF_BLOB + 1,
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


# --- thumbnails -----------------------------------------------------------------------------


def test_thumbnails_are_made_in_the_background(store):
    start_thumbnails(store, workers=2)
    rgba = Image.new("RGBA", (300, 150), (0, 0, 0, 0))
    rgba.paste((200, 0, 0, 255), (0, 0, 150, 150))
    buf = io.BytesIO()
    rgba.save(buf, format="PNG")
    image_id = store.save(new_image(buf.getvalue()))
    assert store.thumbnails.drain(20)
    record = store.get(image_id)
    assert record.thumb_status == DONE and record.thumb_error is None
    with Image.open(store.thumbnail_path(image_id)) as thumb:
        assert thumb.format == "JPEG" and thumb.mode == "RGB"
        assert thumb.size == (64, 32)
        right = thumb.getpixel((56, 16))
        assert min(right) > 240  # transparency becomes white, not black


def test_a_thumbnail_follows_the_exif_orientation(sqlite_store):
    img = Image.new("RGB", (80, 40), "white")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif)
    image_id = sqlite_store.save(NewImage(buf.getvalue(), "JPEG", 40, 80, endpoint="upload"))
    assert make_thumbnail(sqlite_store, image_id) == DONE
    with Image.open(sqlite_store.thumbnail_path(image_id)) as thumb:
        assert thumb.size == (32, 64)


def test_an_undecodable_image_marks_its_thumbnail_failed(sqlite_store):
    start_thumbnails(sqlite_store)
    before = failures("thumbnail")
    broken = sqlite_store.save(new_image(png(40, 40)[:60]))  # a truncated PNG
    good = sqlite_store.save(new_image())
    assert sqlite_store.thumbnails.drain(20)
    record = sqlite_store.get(broken)
    assert record.thumb_status == FAILED
    assert "cannot decode" in record.thumb_error
    assert sqlite_store.get(good).thumb_status == DONE
    assert failures("thumbnail") == before + 1
    assert not sqlite_store.thumbnail_path(broken).exists()


def test_lost_thumbnail_jobs_are_retried_by_the_sweeper(store):
    image_id = store.save(new_image())  # no runner attached: as if the job was lost
    assert store.get(image_id).thumb_status == PENDING
    thumbnails = Thumbnails(store, retry_seconds=0.2)
    store.thumbnails = thumbnails
    thumbnails.start()
    deadline = time.monotonic() + 20
    while store.get(image_id).thumb_status == PENDING and time.monotonic() < deadline:
        time.sleep(0.05)
    record = store.get(image_id)
    assert record.thumb_status == DONE
    assert record.thumb_attempts == 1


def test_the_sweeper_gives_up_after_max_attempts(sqlite_store):
    image_id = sqlite_store.save(new_image())
    for attempt in range(1, 3):
        with sqlite_store.engine.begin() as conn:  # make it look stale
            conn.execute(update(images).values(thumb_updated_at=datetime.now(UTC) - timedelta(hours=1)))
        assert sqlite_store.claim_stale(older_than=60, max_attempts=2) == [image_id]
        assert sqlite_store.get(image_id).thumb_attempts == attempt
    with sqlite_store.engine.begin() as conn:
        conn.execute(update(images).values(thumb_updated_at=datetime.now(UTC) - timedelta(hours=1)))
    assert sqlite_store.claim_stale(older_than=60, max_attempts=2) == []
    record = sqlite_store.get(image_id)
    assert record.thumb_status == FAILED and "after 2 attempts" in record.thumb_error
    # A late worker can still make it: done wins over the sweeper's verdict.
    assert make_thumbnail(sqlite_store, image_id) == DONE


def test_two_sweepers_never_claim_the_same_row(store):
    ids = {store.save(new_image()) for _ in range(20)}
    with store.engine.begin() as conn:
        conn.execute(update(images).values(thumb_updated_at=datetime.now(UTC) - timedelta(hours=1)))
    claims: list[list[str]] = []
    barrier = threading.Barrier(2)

    def sweep() -> None:
        barrier.wait()
        claims.append(store.claim_stale(older_than=60, max_attempts=5))

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(claims[0]).isdisjoint(claims[1])
    assert set(claims[0]) | set(claims[1]) == ids
