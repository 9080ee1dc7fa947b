"""The classifier pages in a real browser: a photo upload on /classify, drawing on /doodle."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image, ImageDraw
from playwright.sync_api import expect

from tests.browser.strokes import circle, mouse_draw

pytestmark = pytest.mark.browser

PHONE = {"viewport": {"width": 390, "height": 844}, "has_touch": True, "is_mobile": True}


def mug_photo() -> bytes:
    """The Teachable fixture's reference drawing (a circle outline), as a PNG file."""
    img = Image.new("RGB", (256, 256), "white")
    ImageDraw.Draw(img).ellipse((40, 40, 216, 216), outline="black", width=12)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_classify_page_shows_the_top_labels_of_a_photo(page, screenshot):
    assert page.goto("/classify").ok
    expect(page.locator("#classify-model")).to_have_value("flask-mug")
    expect(page.locator("#classify-labels")).to_contain_text("Flask, Mug")
    page.locator("#classify-file").set_input_files(
        files=[{"name": "mug.png", "mimeType": "image/png", "buffer": mug_photo()}]
    )
    expect(page.locator("#classify-best")).to_contain_text("Mug (98.7%)")
    expect(page.locator("#classify-top li")).to_have_count(2)
    screenshot(page, "classify")


def test_classify_page_says_what_is_wrong_with_a_bad_file(new_page, browser):
    page = new_page(browser, **PHONE)
    assert page.goto("/classify").ok
    page.locator("#classify-file").set_input_files(
        files=[{"name": "notes.png", "mimeType": "image/png", "buffer": b"these are notes, not a picture"}]
    )
    expect(page.locator("#classify-message")).to_contain_text("not an image")
    expect(page.locator("#classify-top li")).to_have_count(0)


def test_doodle_page_guesses_while_drawing_and_clears(page, screenshot):
    if not (Path(__file__).parents[2] / "models" / "doodles.onnx").is_file():
        pytest.skip("models/doodles.onnx is not built yet")
    assert page.goto("/doodle").ok
    mouse_draw(page, page.locator("#doodle-pad"), circle())
    expect(page.locator("#doodle-top li")).to_have_count(3)
    expect(page.locator("#doodle-best")).not_to_have_text("Nothing yet.")
    expect(page.locator("#doodle-message")).to_be_empty()
    screenshot(page, "doodle")
    page.get_by_role("button", name="Clear").click()
    expect(page.locator("#doodle-top li")).to_have_count(0)
    expect(page.locator("#doodle-best")).to_have_text("Nothing yet.")
