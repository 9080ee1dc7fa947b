"""The gallery page in a real browser: filter by model, keyboard, upload on a phone with touch.

(test_gallery_page.py covers the grid of images sent from the model pages and label correction.)
"""

from __future__ import annotations

import io
import json
import urllib.request
import uuid

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

PHONE = {"width": 390, "height": 844}


def png(seed: int, size: int = 96) -> bytes:
    """A small colourful PNG."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def api_upload(base: str, data: bytes, model: str) -> str:
    """Upload through the API (multipart) and return the id."""
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\n{model}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        f"{base}/images", data=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 201
        return json.loads(response.read())["id"]


def test_a_late_answer_for_an_older_filter_does_not_replace_the_newer_one(page, live_server):
    model, other = f"g{uuid.uuid4().hex[:6]}", f"o{uuid.uuid4().hex[:6]}"
    api_upload(live_server, png(10), model)
    for n in range(2):
        api_upload(live_server, png(11 + n), other)
    held = []  # the page's first, unfiltered list, held back until the filtered one is shown

    def hold_first(route):
        if "model=" in route.request.url or held:
            route.continue_()
        else:
            held.append(route)

    page.route("**/images?*", hold_first)
    assert page.goto("/gallery").ok
    page.select_option("#filter-model", model)
    cards = page.locator("#gallery-grid button")
    expect(cards).to_have_count(1)
    assert len(held) == 1
    held[0].continue_()
    page.wait_for_load_state("networkidle")
    expect(cards).to_have_count(1)
    expect(cards.first).to_contain_text(f"{model}: ")
    expect(page.locator("#export-link")).to_have_attribute("href", f"/images/export?model={model}")


def test_filter_by_model_shows_its_images_and_export_link(page, live_server):
    model = f"g{uuid.uuid4().hex[:6]}"
    for n in range(3):
        api_upload(live_server, png(n), model)
    assert page.goto("/gallery").ok
    page.select_option("#filter-model", model)
    # The link is set when the filtered list has come: waited for first, so that the counts below
    # are the filter's, not those of the page's first list (the same 3 when this test runs alone).
    expect(page.locator("#export-link")).to_have_attribute("href", f"/images/export?model={model}")
    cards = page.locator("#gallery-grid button")
    expect(cards).to_have_count(3)
    expect(page.locator("#gallery-count")).to_have_text("3 images")
    expect(page.locator("#gallery-grid img.thumb")).to_have_count(3, timeout=20_000)
    expect(cards.first).to_contain_text(f"{model}: —")
    page.select_option("#filter-labelled", "true")
    expect(cards).to_have_count(0)
    expect(page.locator("#gallery-message")).to_have_text("No images match these filters yet.")


def test_keyboard_opens_an_image_and_a_deleted_image_says_so(page, live_server):
    model = f"k{uuid.uuid4().hex[:6]}"
    image_id = api_upload(live_server, png(7), model)
    assert page.goto("/gallery").ok
    page.select_option("#filter-model", model)
    card = page.locator("#gallery-grid button")
    expect(card).to_have_count(1)
    card.focus()
    page.keyboard.press("Enter")
    dialog = page.locator("#image-dialog")
    expect(dialog).to_be_visible()
    expect(page.locator("#dialog-meta")).to_contain_text("96 × 96 px")
    # Someone else deletes it meanwhile: saving the label shows the API's message.
    urllib.request.urlopen(
        urllib.request.Request(f"{live_server}/images/{image_id}", method="DELETE"), timeout=10
    )
    page.fill("#label-input", "3")
    page.keyboard.press("Enter")
    expect(page.locator("#dialog-message")).to_contain_text(f"No stored image has the id '{image_id}'")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()


def test_upload_on_a_phone_with_touch(new_page, browser, screenshot, tmp_path):
    page = new_page(browser, viewport=PHONE, has_touch=True, is_mobile=True)
    path = tmp_path / "phone.png"
    path.write_bytes(png(11, 120))
    assert page.goto("/gallery").ok
    page.get_by_role("button", name="Upload").tap()
    expect(page.locator("#gallery-message")).to_have_text("Choose an image file first.")
    page.set_input_files("#upload-file", str(path))
    page.fill("#upload-label", "8")
    with page.expect_response("**/images") as answer:
        page.get_by_role("button", name="Upload").tap()
    image_id = answer.value.json()["id"]
    expect(page.locator("#gallery-message")).to_have_text(f"Uploaded as {image_id}.")
    card = page.get_by_role("button", name=f"Open image {image_id}, upload: — ✓ 8")
    expect(card).to_be_visible()
    card.tap()
    expect(page.locator("#image-dialog")).to_be_visible()
    expect(page.locator("#dialog-meta")).to_contain_text("phone.png")
    screenshot(page, "gallery-phone-dialog")
    page.get_by_role("button", name="Close").tap()
    expect(page.locator("#image-dialog")).to_be_hidden()
