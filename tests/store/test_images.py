"""The image store: atomic file + row writes, queries, labels, deletes, faults, on SQLite and PostgreSQL."""

from __future__ import annotations

import errno
import multiprocessing
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import create_engine, event

import store.images as images_module
from models.image import InputImage
from store.images import ImageStore
from store.records import DONE, PENDING, StoreError, clean_label, new_id
from tests.store.conftest import failures, new_image, png, stored_files
from tests.store_servers import save_in_process


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


@pytest.mark.parametrize("confidence", [97.3, 1.5, -0.1])
def test_confidence_is_kept_as_a_fraction_only(sqlite_store, confidence):
    """One unit in the store: a percentage (a route's answer passed on as is) is refused, not guessed."""
    with pytest.raises(ValueError, match="fraction from 0 to 1"):
        sqlite_store.save(new_image(confidence=confidence))
    assert sqlite_store.list()[1] == 0
    assert sqlite_store.get(sqlite_store.save(new_image(confidence=1.0))).confidence == 1.0


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
    store.start_thumbnails()
    image_id = store.save(new_image(png(300, 200)))  # larger than its own thumbnail may be
    assert store.thumbnails.drain(10)
    record = store.get(image_id)
    assert record.thumb_status == DONE
    assert store.thumbnail_path(image_id).is_file()
    assert store.delete(image_id) is True
    assert store.get(image_id) is None
    assert stored_files(store.image_dir) == []
    assert store.delete(image_id) is False


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
    # Nothing half-written is left; the queued image waits in the journal for the disk to have room.
    assert stored_files(sqlite_store.image_dir) == [] and sqlite_store.journal.pending == 1
    monkeypatch.undo()
    assert sqlite_store.writer.retry_failed() == 1 and sqlite_store.flush(10)
    assert sqlite_store.list()[1] == 1
    assert [p.suffix for p in stored_files(sqlite_store.image_dir)] == [".png"]


def test_a_failed_rename_rolls_the_row_back(sqlite_store, monkeypatch):
    def refuse(src, dst):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(images_module.os, "replace", refuse)
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
    # No file without its row; the queued image waits in the journal until the database takes it.
    assert stored_files(sqlite_store.image_dir) == [] and sqlite_store.journal.pending == 1
    with sqlite_store.engine.begin() as conn:
        conn.exec_driver_sql("DROP TRIGGER broken")
    assert sqlite_store.writer.retry_failed() == 1 and sqlite_store.flush(10)
    assert sqlite_store.list()[1] == 1


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
    assert stored_files(tmp_path / "img") == [] and s.journal.pending == 1  # waits in the journal
    s.close()
    # Closed with an image left: its journal stays for the next start to keep it.
    assert list((tmp_path / "img" / ".journal").rglob("*.log"))
