"""The nose tracker `/track` in a real browser, its camera fed from a committed face frame.

tests/data/tracking/frame_0.jpg is a 320x240 frame with one face whose nose tip is labelled in
labels.json. Scaled to 640x480 it becomes a Y4M video Chromium plays as its camera; the page must
draw the nose dot near the labelled nose.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect

from tests.browser.fake_camera import fit_frame, write_y4m

pytestmark = pytest.mark.browser

DATA = Path(__file__).parents[1] / "data" / "tracking"
CAMERA = (640, 480)
# Allowed distance between the drawn nose and the labelled one, as a fraction of the frame width
# (0.05 of a 320-pixel frame is 16 pixels, about a tenth of the 154-pixel face).
TOLERANCE = 0.05


def labelled_frame(name: str) -> tuple[np.ndarray, tuple[float, float]]:
    """Return a committed frame and its nose tip, normalised to the frame."""
    frames = {f["file"]: f for f in json.loads((DATA / "labels.json").read_text())["frames"]}
    label = frames[name]
    rgb = np.asarray(Image.open(DATA / name).convert("RGB"))
    return rgb, (label["nose"][0] / label["width"], label["nose"][1] / label["height"])


@pytest.fixture(scope="module")
def face_video(tmp_path_factory) -> tuple[Path, tuple[float, float]]:
    """Write frame_0 as a 640x480 Y4M video and return it with the nose, normalised to the video."""
    rgb, (nx, ny) = labelled_frame("frame_0.jpg")
    frame, scale, dx, dy = fit_frame(rgb, *CAMERA)
    h, w = rgb.shape[:2]
    nose = ((nx * w * scale + dx) / CAMERA[0], (ny * h * scale + dy) / CAMERA[1])
    path = write_y4m([frame] * 10, tmp_path_factory.mktemp("camera") / "face.y4m")
    return path, nose


@pytest.fixture(scope="module")
def camera_browser(launch_chromium, face_video):
    """A Chromium whose camera plays the face video, with the permission granted."""
    path, _ = face_video
    browser = launch_chromium(
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={path}",
        "--use-fake-ui-for-media-stream",
    )
    yield browser
    browser.close()


def red_dot(page) -> tuple[float, float] | None:
    """Find the drawn nose dot on the overlay, normalised to the displayed video (None if none)."""
    return page.evaluate(
        """() => {
            const canvas = document.getElementById("track-overlay");
            const video = document.getElementById("track-video");
            const d = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
            let sx = 0, sy = 0, n = 0;
            for (let i = 0; i < d.length; i += 4) {
                if (d[i] > 200 && d[i + 1] < 90 && d[i + 2] < 90 && d[i + 3] > 200) {
                    const p = i / 4;
                    sx += p % canvas.width; sy += Math.floor(p / canvas.width); n++;
                }
            }
            if (!n) return null;
            // The page letterboxes the video inside the overlay; undo it.
            const scale = Math.min(canvas.width / video.videoWidth, canvas.height / video.videoHeight);
            const w = video.videoWidth * scale, h = video.videoHeight * scale;
            return [(sx / n - (canvas.width - w) / 2) / w, (sy / n - (canvas.height - h) / 2) / h];
        }"""
    )


def test_the_camera_view_draws_the_nose_near_the_true_one(new_page, camera_browser, face_video, screenshot):
    _, (true_x, true_y) = face_video
    page = new_page(camera_browser)
    assert page.goto("/track").ok
    with page.expect_response("**/api/track", timeout=20_000) as answer:
        page.get_by_role("button", name="Start camera").click()
    result = answer.value.json()
    assert answer.value.status == 200, result
    assert page.locator("#track-video").evaluate("v => [v.videoWidth, v.videoHeight]") == list(CAMERA)
    sent = answer.value.request
    assert sent.headers["content-type"] == "image/jpeg"
    # The frame is shrunk to 320 pixels wide before it is sent.
    assert Image.open(io.BytesIO(sent.post_data_buffer)).size == (320, 240)

    assert result["found"] and result["mode"] == "detected", result
    assert abs(result["x"] - true_x) < TOLERANCE and abs(result["y"] - true_y) < TOLERANCE, (
        f"the server's nose {result['x']:.3f},{result['y']:.3f} is far from the true {true_x:.3f},{true_y:.3f}"
    )
    readout = page.locator("#track-readout")
    expect(readout).to_have_text(re.compile(r"^Nose: x 0\.\d{3}, y 0\.\d{3} · face detected"))
    shown = [float(v) for v in re.findall(r"0\.\d{3}", readout.inner_text())[:2]]
    assert abs(shown[0] - true_x) < TOLERANCE and abs(shown[1] - true_y) < TOLERANCE, shown

    dot = red_dot(page)
    assert dot is not None, "no nose dot was drawn over the video"
    assert abs(dot[0] - true_x) < TOLERANCE and abs(dot[1] - true_y) < TOLERANCE, (
        f"the drawn dot {dot[0]:.3f},{dot[1]:.3f} is far from the true nose {true_x:.3f},{true_y:.3f}"
    )
    expect(page.locator("#track-hud")).to_have_text(re.compile(r"\d+ fps · \d+ ms"))
    screenshot(page, "track-camera")

    page.get_by_role("button", name="Stop").click()
    expect(page.get_by_role("button", name="Start camera")).to_be_enabled()
    assert red_dot(page) is None, "the dot stays after Stop"


def test_a_photo_gets_its_nose_point(page, screenshot):
    rgb, (true_x, true_y) = labelled_frame("frame_1.jpg")
    assert page.goto("/track").ok
    with page.expect_response("**/api/track") as answer:
        page.get_by_label("Or a photo").set_input_files(str(DATA / "frame_1.jpg"))
    assert answer.value.ok, answer.value.text()
    readout = page.locator("#track-readout")
    expect(readout).to_have_text(re.compile(r"^Nose: x 0\.\d{3}, y 0\.\d{3}"))
    x, y = (float(v) for v in re.findall(r"0\.\d{3}", readout.inner_text())[:2])
    assert abs(x - true_x) < TOLERANCE and abs(y - true_y) < TOLERANCE, (x, y, true_x, true_y)
    screenshot(page, "track-photo")


def test_no_camera_says_so_readably(page):
    """The shared browser has no camera and no auto-granted permission: the page must explain."""
    assert page.goto("/track").ok
    page.get_by_role("button", name="Start camera").click()
    expect(page.locator("#track-message")).to_contain_text(re.compile("camera", re.I))
    expect(page.locator("#track-message")).not_to_contain_text("Waiting")
    expect(page.get_by_role("button", name="Start camera")).to_be_enabled()


def test_a_server_error_on_a_photo_shows_a_readable_message(page):
    page.route(
        "**/api/track",
        lambda route: route.fulfill(
            status=500, json={"error": "Tracking failed (test).", "code": "internal_error"}
        ),
    )
    assert page.goto("/track").ok
    page.get_by_label("Or a photo").set_input_files(str(DATA / "frame_1.jpg"))
    expect(page.locator("#track-message")).to_have_text("Tracking failed (test).")
    expect(page.locator("#track-readout")).to_have_text("Nose: –")


def test_a_file_that_is_not_an_image_is_reported(page):
    assert page.goto("/track").ok
    page.get_by_label("Or a photo").set_input_files(
        files=[{"name": "face.jpg", "mimeType": "image/jpeg", "buffer": b"not a jpeg at all"}]
    )
    expect(page.locator("#track-message")).to_have_class(re.compile(r"\berror\b"))
    expect(page.locator("#track-message")).not_to_be_empty()
    expect(page.locator("#track-readout")).to_have_text("Nose: –")


def test_a_4xx_from_the_server_shows_its_message(page):
    """A real 400 from the server (the page's upload emptied on its way) is shown as it came."""
    page.route("**/api/track", lambda route: route.continue_(post_data=b""))
    assert page.goto("/track").ok
    with page.expect_response("**/api/track") as answer:
        page.get_by_label("Or a photo").set_input_files(str(DATA / "frame_1.jpg"))
    assert 400 <= answer.value.status < 500, answer.value.text()
    expect(page.locator("#track-message")).to_have_text(answer.value.json()["error"])
    expect(page.locator("#track-readout")).to_have_text("Nose: –")
