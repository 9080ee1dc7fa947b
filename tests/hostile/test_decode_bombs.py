"""Decompression and decode-time bombs, on every route that takes an image, in every encoding it takes.

A bomb is refused from what the file declares (every frame, page, tile, canvas and sub-image), before
a single pixel is decoded: the decoders are replaced by tripwires here. Formats the service does not
take are refused unread (415), whatever Pillow or OpenCV could make of them. The work a file may cost
is bounded too: a progressive JPEG's scans and an animation's frames are counted before decoding.
"""

from __future__ import annotations

import threading
import time

import cv2
import pyspng
import pytest
from PIL import ImageFile

from tests.hostile import bombs, routes

# A refusal from the headers takes milliseconds of CPU. Measured as the CPU time of the thread that
# runs the request (the test client serves it on this thread), so other jobs on the machine do not count.
FAST_SECONDS = 0.25


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    with routes.hostile_app(tmp_path_factory.mktemp("bombs")) as app:
        yield app


@pytest.fixture(scope="module")
def client(app):
    return app.test_client()


@pytest.fixture(scope="module")
def targets(app, client):
    """Every route that takes an image, with its encodings (asked of the routes themselves)."""
    found = routes.image_routes(app, client)
    assert len(found) >= 5, found
    return found


@pytest.fixture
def tripwires(monkeypatch):
    """Make every pixel decoder the service uses fail loudly if a request reaches it.

    The test client runs requests on this thread; the store's background thread (thumbnails of the
    honest images that found the routes) keeps the real decoders.
    """
    calls: list[str] = []

    def wire(name, original):
        def tripped(*args, **kwargs):
            if threading.current_thread() is not threading.main_thread():
                return original(*args, **kwargs)
            calls.append(name)
            raise AssertionError(f"{name} was called: pixels were decoded")

        return tripped

    monkeypatch.setattr(cv2, "imdecode", wire("cv2.imdecode", cv2.imdecode))
    monkeypatch.setattr(pyspng, "load", wire("pyspng.load", pyspng.load))
    monkeypatch.setattr(ImageFile.ImageFile, "load", wire("Pillow load", ImageFile.ImageFile.load))
    return calls


def attack(client, targets, files: dict[str, bytes], status: int, code: str, seconds: float = FAST_SECONDS):
    """Send every file to every image route in every encoding; return what was not refused as expected."""
    wrong = []
    for route, encodings in targets.items():
        for encoding in encodings:
            for name, data in files.items():
                started = time.thread_time()
                response = client.open(
                    route.path, method=route.method, **routes.image_request(data, encoding)
                )
                elapsed = time.thread_time() - started
                body = response.get_json(silent=True) or {}
                if (response.status_code, body.get("code")) != (status, code) or elapsed > seconds:
                    wrong.append(
                        f"{route} {encoding} {name}: {response.status_code} {body.get('code')} in {elapsed:.2f}s"
                    )
    return wrong


def test_every_declared_size_is_checked_before_any_pixel_is_decoded(app, client, targets, tripwires):
    stored = routes.stored_count(app)  # the honest images that found the routes
    wrong = attack(client, targets, bombs.declared_bombs(), 413, "image_too_large")
    assert not wrong, "\n".join(wrong)
    assert tripwires == []
    assert routes.stored_count(app) == stored


def test_formats_the_service_does_not_take_are_refused_unread(app, client, targets, tripwires):
    stored = routes.stored_count(app)
    wrong = attack(client, targets, bombs.other_formats(), 415, "not_an_image")
    assert not wrong, "\n".join(wrong)
    assert tripwires == []
    assert routes.stored_count(app) == stored


def test_a_scan_bomb_is_refused_in_well_under_a_second(app, client, targets, tripwires):
    """The report's decode-time bomb: one empty AC scan repeated thousands of times (5 s to decode)."""
    wrong = attack(client, targets, {"progressive JPEG": bombs.jpeg_scan_bomb()}, 413, "image_too_complex")
    assert not wrong, "\n".join(wrong)
    assert tripwires == []


def test_animations_over_the_frame_limit_are_refused_before_decoding(app, client, targets, tripwires):
    wrong = attack(client, targets, bombs.animations(), 413, "image_too_complex")
    assert not wrong, "\n".join(wrong)
    assert tripwires == []
