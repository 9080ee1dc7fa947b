"""Thumbnails on Celery with a real Redis: a worker makes them, a broker that is down or comes back."""

from __future__ import annotations

import io
import json
import shutil
import time

import pytest
from PIL import Image

from store import ImageStore
from tests.blueprints.gallery_support import (
    build_app,
    failures,
    photo,
    upload,
    wait_for_thumbnail,
)
from tests.store_servers import free_port, start_celery_worker, start_redis, stop_process

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
    r = upload(client, photo(400, 200))  # over 4x the thumbnail's side: a JPEG is made
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
    r = upload(client, photo(300, 200))  # over 4x the thumbnail's side: a JPEG is made
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
