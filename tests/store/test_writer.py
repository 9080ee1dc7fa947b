"""The background writer: predictions queue their image and never wait for the store."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from models.image import InputImage
from store.images import ImageStore
from tests.store.conftest import failures, png


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
    real = s.writer.save
    monkeypatch.setattr(s.writer, "save", lambda new, **kw: (gate.wait(10), real(new, **kw))[1])
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
    monkeypatch.setattr(s.writer.pool, "start", lambda: None)  # keep the jobs in the queue to look at
    upload = InputImage(
        pixels=np.zeros((400, 400, 4), np.uint8), format="PNG", source="raw", data=png(400, 400)
    )
    array = InputImage(pixels=np.zeros((6, 9), np.uint8), format="ARRAY", source="legacy_array")
    s.submit(upload, endpoint="e", model="m", prediction="1", confidence=1.0)
    s.submit(array, endpoint="e", model="m", prediction="1", confidence=1.0)
    queued = [s.writer.pool.queue.get_nowait().entry, s.writer.pool.queue.get_nowait().entry]
    # An upload's 640 KB of pixels must not wait in a queue of 256 jobs; its few KB of PNG do.
    assert queued[0].pixels is None and queued[0].data == upload.data
    assert (queued[0].format, queued[0].width, queued[0].height) == ("PNG", 400, 400)
    # A legacy array has no bytes yet: it is encoded by the writer, as PNG.
    assert queued[1].data is None and queued[1].pixels is array.pixels and queued[1].format == "PNG"
