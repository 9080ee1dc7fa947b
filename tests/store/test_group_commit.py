"""The writer's group commit and the thumbnails it makes from a request's pixels (store.saving)."""

from __future__ import annotations

import io
import time

import cv2
import numpy as np
import pytest
from PIL import Image
from prometheus_client import REGISTRY
from sqlalchemy import event

from models.image import InputImage
from store.journal import Entry
from store.pool import WorkerPool
from store.records import DONE, PENDING, StoreError, new_id
from store.render import Decoded
from store.thumbnails import render_thumbnail
from tests.store.conftest import png


def canvas(width: int = 200, height: int = 100) -> InputImage:
    """Black anti-aliased strokes on transparency, as libspng decodes the drawing pages' PNGs."""
    rgba = np.zeros((height, width, 4), np.uint8)
    alpha = np.ascontiguousarray(rgba[:, :, 3])
    cv2.ellipse(alpha, (width // 2, height // 2), (width // 3, height // 3), 0, 0, 300, 255, 7, cv2.LINE_AA)
    rgba[:, :, 3] = alpha
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, "PNG")
    return InputImage(pixels=rgba, format="PNG", source="data_url", data=buf.getvalue(), order="RGB")


def submit(store, image: InputImage) -> str:
    return store.submit(image, endpoint="numbers.predict", model="numbers", prediction="7", confidence=0.9)


def hold_queue(store, monkeypatch) -> None:
    """Keep submitted jobs in the writer's queue until `release` starts the thread."""
    monkeypatch.setattr(store.writer.pool, "start", lambda: None)


def release(store) -> None:
    WorkerPool.start(store.writer.pool)


def test_queued_images_are_kept_with_one_commit(store, monkeypatch):
    store.ensure_schema()
    commits = []
    event.listen(store.engine, "commit", lambda conn: commits.append(1))
    hold_queue(store, monkeypatch)
    ids = [submit(store, canvas()) for _ in range(10)]
    release(store)
    assert store.flush(30)
    assert len(commits) == 1  # one transaction for the ten rows, not ten
    assert store.list(per_page=20)[1] == 10 and all(store.get(i) for i in ids)
    assert store.journal.pending == 0


def test_a_canvas_gets_its_thumbnail_with_its_row(store, monkeypatch):
    store.start_thumbnails()
    monkeypatch.setattr(store.thumbnails, "schedule", lambda image_id: pytest.fail("left for the runner"))
    image = canvas(400, 200)  # over 4x the thumbnail's side: not its own thumbnail
    image_id = submit(store, image)
    assert store.flush(30)
    record = store.get(image_id)
    assert record.thumb_status == DONE  # committed done: no second decode, no row updates later
    with Image.open(store.thumbnail_path(image_id)) as thumb:
        assert (thumb.format, thumb.mode, thumb.size) == ("JPEG", "RGB", (64, 32))
        ours = np.asarray(thumb).astype(int)
    buf = io.BytesIO()
    render_thumbnail(store.file_path(record), 64).save(buf, "JPEG", quality=85)  # as the file path keeps it
    reference = np.asarray(Image.open(buf)).astype(int)
    # Pillow's own box or bilinear filters differ from its Lanczos by about 2 levels here.
    assert np.abs(ours - reference).mean() < 3.0  # the picture the file path would have made
    assert store.writer.held_bytes == 0


def test_a_png_with_an_exif_orientation_is_left_to_the_runner(sqlite_store):
    sqlite_store.start_thumbnails()
    img = Image.new("RGB", (80, 40), "white")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display: the decoded pixels are not
    buf = io.BytesIO()
    img.save(buf, "PNG", exif=exif)
    image = InputImage(pixels=np.asarray(img), format="PNG", source="raw", data=buf.getvalue(), order="RGB")
    image_id = submit(sqlite_store, image)
    assert sqlite_store.flush(30) and sqlite_store.thumbnails.drain(30)
    assert sqlite_store.get(image_id).thumb_status == DONE
    with Image.open(sqlite_store.thumbnail_path(image_id)) as thumb:
        assert thumb.size == (32, 64)  # upright, as the file path makes it


def test_past_the_budget_the_request_shrinks_the_pixels_instead(sqlite_store, monkeypatch):
    hold_queue(sqlite_store, monkeypatch)
    big, small = canvas(400, 400), canvas(300, 300)  # both larger than their own thumbnails
    sqlite_store.writer.hold_bytes = big.pixels.nbytes + small.pixels.nbytes // 2
    submit(sqlite_store, big)
    submit(sqlite_store, small)  # over the budget now
    jobs = list(sqlite_store.writer.pool.queue.queue)
    assert jobs[0].decoded.pixels is big.pixels and not jobs[0].decoded.small
    assert jobs[1].decoded.small and jobs[1].decoded.pixels.shape == (64, 64, 3)
    assert sqlite_store.writer.held_bytes == big.pixels.nbytes  # the shrunk one is not counted
    sqlite_store.start_thumbnails()
    release(sqlite_store)
    assert sqlite_store.flush(30)
    assert sqlite_store.writer.held_bytes == 0
    assert {sqlite_store.get(j.entry.image_id).thumb_status for j in jobs} == {DONE}


def test_a_batch_is_counted_by_endpoint_and_thumbnail(sqlite_store, monkeypatch):
    def saved(endpoint: str) -> float:
        return REGISTRY.get_sample_value("image_store_saved_total", {"endpoint": endpoint}) or 0.0

    def thumbnails_done() -> float:
        return REGISTRY.get_sample_value("image_store_thumbnails_total", {"status": DONE}) or 0.0

    before = saved("batch-a"), saved("batch-b"), thumbnails_done()
    sqlite_store.start_thumbnails()
    scheduled: list[str] = []
    monkeypatch.setattr(sqlite_store.thumbnails, "schedule", scheduled.append)
    pixels = Decoded(np.zeros((100, 200), np.uint8), "RGB")
    items = [(entry(png(200, 100, value=v), endpoint="batch-a"), pixels) for v in range(3)]
    items += [(entry(png(200, 100, value=9), endpoint="batch-b"), None)]  # its thumbnail made later
    assert all(isinstance(r, str) for r in sqlite_store.save_entries(items))
    assert saved("batch-a") - before[0] == 3 and saved("batch-b") - before[1] == 1
    assert thumbnails_done() - before[2] == 3
    assert scheduled == [items[3][0].image_id]  # the one without pixels goes to the runner


def entry(data: bytes, *, image_id: str | None = None, confidence: float = 0.5, endpoint: str = "e") -> Entry:
    with Image.open(io.BytesIO(data)) as img:
        width, height = img.size
    return Entry(
        image_id=image_id or new_id(),
        created=time.time(),
        endpoint=endpoint,
        model="m",
        prediction="1",
        confidence=confidence,
        format="PNG",
        width=width,
        height=height,
        data=data,
    )


def test_one_bad_image_does_not_keep_the_others_out(sqlite_store):
    kept = sqlite_store.save_entries([(entry(png()), None)])[0]
    existing = sqlite_store.file_path(sqlite_store.get(kept))
    good = [entry(png(300, 150, value=v)) for v in (10, 20)]  # too large to be their own thumbnails
    results = sqlite_store.save_entries(
        [
            (good[0], None),
            (entry(png(), image_id=kept), None),  # its id is taken: the one transaction fails
            (entry(png(), confidence=3.0), None),  # refused before any file is written
            (good[1], Decoded(np.zeros((150, 300), np.uint8), "RGB")),
        ]
    )
    assert results[0] == good[0].image_id and results[3] == good[1].image_id
    assert isinstance(results[1], StoreError) and results[1].reason == "database"
    assert isinstance(results[2], ValueError)
    assert sqlite_store.list()[1] == 3
    assert existing.is_file()  # the failed duplicate removed only what it wrote itself
    assert sqlite_store.get(good[1].image_id).thumb_status == PENDING  # no runner: not made now


def test_a_lingering_batch_gathers_what_comes_and_drain_cuts_the_wait_short():
    batches: list[list[int]] = []
    pool = WorkerPool("lingering", batches.append, queue_size=10, batch=8, linger=60)
    assert all(pool.put(n) for n in range(3))
    assert pool.drain(20)  # not 60 s: a drain ends the wait
    assert batches == [[0, 1, 2]]
    pool.close()
