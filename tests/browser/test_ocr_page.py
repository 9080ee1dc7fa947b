"""The OCR page `/ocr` in a real browser: an uploaded line image is read, with a box per character."""

from __future__ import annotations

import base64
import difflib
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

LINES = Path(__file__).parents[1] / "data" / "ocr" / "lines"


def truth(name: str) -> str:
    """The text a committed line image was rendered from."""
    for row in (LINES / "labels.tsv").read_text(encoding="utf-8").splitlines():
        if row and not row.startswith("#"):
            file, text = row.split("\t", 1)
            if file == name:
                return text.replace("\\n", "\n")
    raise KeyError(name)


def similar(a: str, b: str) -> float:
    """Character similarity of two texts (1.0: identical)."""
    return difflib.SequenceMatcher(None, a, b).ratio()


def boxes_inside_image(page) -> list[str]:
    """Say which drawn character boxes fall outside the displayed image (empty when all are inside)."""
    return page.evaluate(
        """() => {
            const img = document.getElementById("ocr-image").getBoundingClientRect();
            const bad = [];
            document.querySelectorAll("#ocr-boxes rect").forEach((r, i) => {
                const b = r.getBoundingClientRect();
                if (b.width <= 0 || b.height <= 0 || b.left < img.left - 1 || b.top < img.top - 1
                    || b.right > img.right + 1 || b.bottom > img.bottom + 1) bad.push(i + ": " + JSON.stringify(b));
            });
            return bad;
        }"""
    )


def test_an_uploaded_line_is_read_with_a_box_per_character(page, screenshot):
    expected = truth("payment_54.png")
    assert page.goto("/ocr").ok
    with page.expect_response("**/api/ocr") as answer:
        page.get_by_label("Image", exact=True).set_input_files(str(LINES / "payment_54.png"))
    result = answer.value.json()
    assert answer.value.ok, result
    assert similar(result["text"], expected) >= 0.95, f"read {result['text']!r}, expected {expected!r}"

    lines = page.locator("#ocr-lines .ocr-text")
    expect(lines).to_have_count(1)
    expect(lines.first).to_have_text(result["lines"][0]["text"])
    expect(page.locator("#ocr-message")).to_be_empty()

    # One box per character, drawn over the image, and one button per character.
    n = len(result["characters"])
    assert n == len(result["text"].replace(" ", "")), "one character entry per non-space character"
    expect(page.locator("#ocr-boxes rect")).to_have_count(n)
    expect(page.get_by_role("group", name="Characters of line 1").get_by_role("button")).to_have_count(n)
    assert boxes_inside_image(page) == []
    expect(page.get_by_role("heading", name="GS1 fields")).to_be_visible()
    screenshot(page, "ocr")

    # Choosing a character highlights its box and tells its confidence.
    first = result["characters"][0]
    page.get_by_role("group", name="Characters of line 1").get_by_role("button").first.click()
    expect(page.locator("#ocr-boxes rect").first).to_have_class(re.compile(r"\bactive\b"))
    expect(page.locator("#ocr-char-info")).to_contain_text(f"“{first['char']}”: confidence")
    page.get_by_label("Show character boxes").uncheck()
    expect(page.locator("#ocr-boxes")).to_be_hidden()


def test_a_dropped_three_line_image_is_read_line_by_line(page):
    expected = truth("three_lines.png").split("\n")
    assert page.goto("/ocr").ok
    data = base64.b64encode((LINES / "three_lines.png").read_bytes()).decode()
    with page.expect_response("**/api/ocr") as answer:
        page.get_by_label("Image area: drop or paste an image here").evaluate(
            """(stage, data) => {
                const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
                const dt = new DataTransfer();
                dt.items.add(new File([bytes], "three_lines.png", { type: "image/png" }));
                stage.dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }));
            }""",
            data,
        )
    assert answer.value.ok, answer.value.text()
    result = answer.value.json()
    lines = page.locator("#ocr-lines .ocr-text")
    expect(lines).to_have_count(len(expected))
    # The page shows each line as read; how well it is read is the model tests' business.
    assert lines.all_inner_texts() == [line["text"] for line in result["lines"]]
    assert similar("\n".join(lines.all_inner_texts()), "\n".join(expected)) >= 0.85, result["text"]


def test_read_without_an_image_asks_for_one(page):
    assert page.goto("/ocr").ok
    page.get_by_role("button", name="Read").click()
    expect(page.get_by_role("status")).to_have_text("Choose, drop or paste an image first.")


def test_a_file_that_is_not_an_image_gets_the_servers_4xx_message(page):
    assert page.goto("/ocr").ok
    with page.expect_response("**/api/ocr") as answer:
        page.get_by_label("Image", exact=True).set_input_files(
            files=[{"name": "scan.png", "mimeType": "image/png", "buffer": b"%PDF-1.4 not an image"}]
        )
    assert 400 <= answer.value.status < 500
    expect(page.get_by_role("status")).to_have_text(answer.value.json()["error"])
    expect(page.locator("#ocr-boxes rect")).to_have_count(0)


def test_a_server_error_shows_a_readable_message(page):
    page.route(
        "**/api/ocr",
        lambda route: route.fulfill(
            status=500, json={"error": "The OCR model failed (test).", "code": "internal"}
        ),
    )
    assert page.goto("/ocr").ok
    page.get_by_label("Image", exact=True).set_input_files(str(LINES / "payment_54.png"))
    expect(page.get_by_role("status")).to_have_text("The OCR model failed (test).")
    expect(page.locator("#ocr-lines .ocr-text")).to_have_count(0)
    expect(page.get_by_role("button", name="Read")).to_be_enabled()
