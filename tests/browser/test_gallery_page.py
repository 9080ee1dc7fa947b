"""The gallery `/gallery` in a real browser: the images just sent appear, and a label can be corrected.

The live server keeps the images of the model routes (SAVE_IMAGES on, a temporary store) but not
webcam frames. The test sends a drawn digit from `/` (kept) and a photo from `/track` (not kept),
finds the digit in the store by the SHA-256 of the bytes the browser sent, then works the gallery
page as a user would. With ADMIN_TOKEN set, the page signs in before it may change anything.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect
from werkzeug.serving import make_server

from tests.browser.strokes import SEVEN, mouse_draw
from tests.conftest import hide_environment

pytestmark = pytest.mark.browser

FACE = Path(__file__).parents[1] / "data" / "tracking" / "frame_1.jpg"


def stored_ids(page) -> set[str]:
    """The ids of the images stored so far (the newest hundred)."""
    return {item["id"] for item in page.request.get("/images?per_page=100").json()["items"]}


def stored(page, sha256: str, before: set[str], timeout: float = 10.0) -> dict:
    """Wait until the store holds a new image (not in `before`) with these bytes; return its summary."""
    deadline = time.monotonic() + timeout
    while True:
        body = page.request.get("/images?per_page=100").json()
        found = [item for item in body["items"] if item["sha256"] == sha256 and item["id"] not in before]
        if found:
            return found[0]
        assert time.monotonic() < deadline, f"no new stored image has sha256 {sha256} after {timeout} s"
        time.sleep(0.2)


def send_digit(page) -> dict:
    """Draw a 7 on `/`, send it, and return the stored image."""
    before = stored_ids(page)
    assert page.goto("/").ok
    mouse_draw(page, page.get_by_role("img", name=re.compile("Drawing area")), SEVEN)
    with page.expect_request("**/api/predict") as sent:
        page.get_by_role("button", name="Send", exact=True).click()
    data_url = json.loads(sent.value.post_data)["image"]
    return stored(page, hashlib.sha256(base64.b64decode(data_url.split(",", 1)[1])).hexdigest(), before)


def send_face(page) -> str:
    """Send a face photo on `/track` and return its SHA-256 (webcam frames are not kept)."""
    assert page.goto("/track").ok
    with page.expect_response("**/api/track") as answer:
        page.get_by_label("Or a photo").set_input_files(str(FACE))
    assert answer.value.ok
    return hashlib.sha256(FACE.read_bytes()).hexdigest()


def upload(page) -> dict:
    """Store the gallery's JPEG fixture through its API (a synchronous save) and return its summary."""
    jpeg = (Path(__file__).parents[1] / "data" / "gallery" / "exif_gps.jpg").read_bytes()
    response = page.request.post(
        "/images",
        multipart={
            "file": {"name": "photo.jpg", "mimeType": "image/jpeg", "buffer": jpeg},
            "model": "browser-test",
        },
    )
    assert response.status == 201, response.text()
    return response.json()


def card(page, image_id: str):
    """The gallery button that opens one image."""
    return page.get_by_role("button", name=re.compile(f"^Open image {image_id},"))


def test_the_images_just_sent_appear_and_a_label_can_be_corrected(page, screenshot):
    digit = send_digit(page)
    face_sha = send_face(page)
    face = upload(page)
    assert digit["model"] == "numbers" and digit["confidence"] <= 1  # one unit: a fraction
    time.sleep(0.5)  # a kept image is in the store before its answer; a frame would be by now
    items = page.request.get("/images?per_page=100").json()["items"]
    assert not [item for item in items if item["sha256"] == face_sha], "a /track frame was kept"

    assert page.goto("/gallery", wait_until="domcontentloaded").ok
    grid = page.get_by_role("list", name="Stored images")
    for item in (digit, face):
        expect(card(page, item["id"])).to_be_visible()
        # The thumbnail is made in the background; the page retries until it is there.
        thumb = grid.get_by_role("listitem").filter(has=card(page, item["id"])).locator("img.thumb")
        expect(thumb).to_be_visible(timeout=15_000)
        assert thumb.evaluate("img => img.naturalWidth") > 0
    expect(card(page, digit["id"])).to_contain_text(f"numbers: {digit['prediction']}")
    # The store keeps a fraction and the page shows it as a percentage, without guessing the unit.
    expect(card(page, digit["id"])).to_contain_text(f"{digit['confidence'] * 100:.1f}%")
    screenshot(page, "gallery")

    card(page, digit["id"]).click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_role("heading", name=f"Image {digit['id']}")).to_be_visible()
    expect(dialog.get_by_role("img", name=f"Stored image {digit['id']}")).to_be_visible()
    expect(dialog.get_by_role("row", name=re.compile("^Prediction"))).to_contain_text(digit["prediction"])
    label = dialog.get_by_label("Correct label")
    expect(label).to_be_focused()
    label.fill("1")
    dialog.get_by_role("button", name="Save label").click()
    expect(dialog.get_by_role("status")).to_have_text("Label saved.")
    expect(dialog.get_by_role("row", name=re.compile("^Label"))).to_contain_text("1")
    screenshot(page, "gallery-label")
    assert page.request.get(digit["url"]).json()["label"] == "1"

    dialog.get_by_role("button", name="Close").click()
    expect(dialog).to_be_hidden()
    expect(card(page, digit["id"])).to_contain_text("✓ 1")
    page.get_by_label("Labels").select_option("Labelled")
    expect(card(page, digit["id"])).to_be_visible()
    expect(card(page, face["id"])).to_have_count(0)


def test_a_server_error_saving_a_label_shows_a_readable_message(page):
    image = upload(page)
    page.route(
        "**/images/*/label",
        lambda route: route.fulfill(
            status=500, json={"error": "The database is down (test).", "code": "internal"}
        ),
    )
    assert page.goto("/gallery", wait_until="domcontentloaded").ok
    card(page, image["id"]).click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Correct label").fill("7")
    dialog.get_by_role("button", name="Save label").click()
    expect(dialog.get_by_role("status")).to_have_text("The database is down (test).")
    assert page.request.get(image["url"]).json()["label"] is None


def test_a_4xx_saving_a_label_shows_the_servers_message(page):
    """A real 400 from the server (a label longer than allowed, slipped into the request) is shown."""
    image = upload(page)
    page.route("**/images/*/label", lambda route: route.continue_(post_data=json.dumps({"label": "x" * 500})))
    assert page.goto("/gallery", wait_until="domcontentloaded").ok
    card(page, image["id"]).click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Correct label").fill("7")
    with page.expect_response("**/images/*/label") as answer:
        dialog.get_by_role("button", name="Save label").click()
    assert answer.value.status == 400, answer.value.text()
    expect(dialog.get_by_role("status")).to_have_text(answer.value.json()["error"])


def test_a_gallery_that_cannot_load_says_so(page):
    page.route(
        re.compile(r"/images\?"),
        lambda route: route.fulfill(status=503, json={"error": "The image store is unavailable (test)."}),
    )
    assert page.goto("/gallery", wait_until="domcontentloaded").ok
    expect(page.locator("#gallery-message")).to_have_text("The image store is unavailable (test).")


TOKEN = "browser-admin-token-0123456789"


@pytest.fixture(scope="module")
def token_server(tmp_path_factory):
    """A second live server, with ADMIN_TOKEN set and one stored image; yields (base URL, image id)."""
    from app import create_app

    folder = tmp_path_factory.mktemp("token-store")
    with pytest.MonkeyPatch.context() as mp:
        hide_environment(mp)
        app = create_app(
            {
                "SAVE_IMAGES": False,
                "LOG_LEVEL": "WARNING",
                "ADMIN_TOKEN": TOKEN,
                "IMAGE_DIR": str(folder / "images"),
                "DATABASE_URL": f"sqlite:///{folder / 'store.db'}",
            }
        )
    jpeg = (Path(__file__).parents[1] / "data" / "gallery" / "exif_gps.jpg").read_bytes()
    image_id = app.test_client().post("/images", data=jpeg, content_type="image/jpeg").get_json()["id"]
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="token-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", image_id
    finally:
        server.shutdown()
        thread.join(timeout=10)


def test_with_a_token_the_page_signs_in_before_changing_anything(page, token_server, screenshot):
    base, image_id = token_server
    assert page.goto(base + "/gallery", wait_until="domcontentloaded").ok
    expect(page.locator("#admin-state")).to_contain_text("need the admin token")

    card(page, image_id).click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Correct label").fill("7")
    dialog.get_by_role("button", name="Save label").click()
    expect(dialog.get_by_role("status")).to_have_text(re.compile("^Sign in with the admin token"))
    dialog.get_by_role("button", name="Close").click()

    page.get_by_label("Admin token").fill("not-the-token-at-all")
    page.get_by_role("button", name="Sign in").click()
    card(page, image_id).click()
    dialog.get_by_label("Correct label").fill("7")
    dialog.get_by_role("button", name="Save label").click()
    expect(dialog.get_by_role("status")).to_have_text(re.compile("^The admin token is not right"))
    dialog.get_by_role("button", name="Close").click()
    assert page.request.get(f"{base}/images/{image_id}").json()["label"] is None

    page.get_by_label("Admin token").fill(TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#admin-state")).to_contain_text("Signed in for this tab")
    assert page.get_by_label("Admin token").input_value() == ""  # kept in sessionStorage, not the form
    card(page, image_id).click()
    dialog.get_by_label("Correct label").fill("7")
    dialog.get_by_role("button", name="Save label").click()
    expect(dialog.get_by_role("status")).to_have_text("Label saved.")
    dialog.get_by_role("button", name="Close").click()
    assert page.request.get(f"{base}/images/{image_id}").json()["label"] == "7"

    with page.expect_download() as download:
        page.get_by_role("link", name="Export labelled (zip)").click()
    assert download.value.suggested_filename.startswith("labelled-all-")
    expect(page.locator("#gallery-message")).to_have_text("Exported 1 labelled images.")
    screenshot(page, "gallery-signed-in")

    page.get_by_role("button", name="Sign out").click()
    page.get_by_role("link", name="Export labelled (zip)").click()
    expect(page.locator("#gallery-message")).to_have_text(re.compile("^Sign in with the admin token"))
