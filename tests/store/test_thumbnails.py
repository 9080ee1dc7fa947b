"""Thumbnails in the background, EXIF orientation, failures, and the retry sweeper."""

from __future__ import annotations

import io
import threading
import time
from datetime import UTC, datetime, timedelta

from PIL import Image
from sqlalchemy import update

from store.records import DONE, FAILED, PENDING, NewImage
from store.schema import images
from store.thumbnails import Thumbnails, claim_stale, make_thumbnail
from tests.store.conftest import failures, new_image, png


def test_thumbnails_are_made_in_the_background(store):
    store.start_thumbnails(workers=2)
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
    sqlite_store.start_thumbnails()
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
        assert claim_stale(sqlite_store, older_than=60, max_attempts=2) == [image_id]
        assert sqlite_store.get(image_id).thumb_attempts == attempt
    with sqlite_store.engine.begin() as conn:
        conn.execute(update(images).values(thumb_updated_at=datetime.now(UTC) - timedelta(hours=1)))
    assert claim_stale(sqlite_store, older_than=60, max_attempts=2) == []
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
        claims.append(claim_stale(store, older_than=60, max_attempts=5))

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(claims[0]).isdisjoint(claims[1])
    assert set(claims[0]) | set(claims[1]) == ids
