"""The digit page `/` in a real browser: draw a 7 with a mouse, a finger or a pen, send it, clear it."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import expect

from tests.browser.strokes import SEVEN, ink_fraction, mouse_draw, pen_draw, touch_draw

pytestmark = pytest.mark.browser

PHONE = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 3,
    "has_touch": True,
    "is_mobile": True,
}
TABLET = {"viewport": {"width": 820, "height": 1180}, "device_scale_factor": 2}
INPUTS = {
    "mouse": ({}, mouse_draw),
    "touch": (PHONE, touch_draw),
    "pen": (TABLET, pen_draw),
}


def open_digits(new_page, browser, **options):
    """Open `/` and return the page and its drawing pad."""
    page = new_page(browser, **options)
    assert page.goto("/").ok
    pad = page.get_by_role("img", name=re.compile("Drawing area"))
    expect(pad).to_be_visible()
    return page, pad


@pytest.mark.parametrize("pointer", list(INPUTS))
def test_a_drawn_seven_is_recognised_and_clear_empties_the_pad(pointer, new_page, browser, screenshot):
    options, draw = INPUTS[pointer]
    page, pad = open_digits(new_page, browser, **options)
    expect(page.locator("#numbers-digit")).to_have_text("?")

    draw(page, pad, SEVEN)
    assert ink_fraction(pad) > 0.01, f"the {pointer} strokes left no ink on the pad"
    if pointer == "touch":
        # A finger needs a moment to move from the pad to the button; Chromium's gesture detector
        # may swallow a tap that lands within milliseconds of the last stroke's touchend.
        page.wait_for_timeout(700)
    with page.expect_response("**/api/predict") as answer:
        send = page.get_by_role("button", name="Send", exact=True)
        send.tap() if pointer == "touch" else send.click()
    body = answer.value.json()
    assert answer.value.status == 200, body

    expect(page.locator("#numbers-digit")).to_have_text("7")
    certainty = page.locator("#numbers-certainty")
    expect(certainty).to_have_text(re.compile(r"^\d{1,3}\.\d\d%$"))
    shown = float(certainty.inner_text().rstrip("%"))
    assert shown == pytest.approx(body["certainty"], abs=0.01)
    assert shown >= 60, f"a clear 7 should be certain, got {shown}%"
    bar = page.get_by_role("progressbar", name="Certainty")
    expect(bar).to_have_attribute("aria-valuenow", re.compile(r"^\d"))
    assert float(bar.get_attribute("aria-valuenow")) == pytest.approx(body["certainty"], abs=0.01)
    expect(page.get_by_role("list", name="Most likely digits").get_by_role("listitem")).to_have_count(3)
    expect(page.locator("#numbers-message")).to_be_empty()
    # The answer is repeated under the pad, in view on a phone while the result card is below the fold.
    inline = page.locator("#numbers-inline")
    expect(inline).to_have_text(f"7 · {certainty.inner_text()}")
    if pointer == "touch":
        expect(inline).to_be_in_viewport()
    screenshot(page, f"digits-{pointer}")

    page.get_by_role("button", name="Clear", exact=True).click()
    assert ink_fraction(pad) == 0
    expect(page.locator("#numbers-digit")).to_have_text("?")
    expect(certainty).to_have_text("–")
    expect(page.get_by_role("list", name="Most likely digits").get_by_role("listitem")).to_have_count(0)
    expect(inline).to_be_empty()


def test_the_server_panel_shows_cpu_and_memory_and_refreshes(new_page, browser):
    page = new_page(browser)
    # A fake clock: the panel's 5-second refresh is run on demand instead of waited for.
    page.clock.install()
    with page.expect_response("**/api/system_info") as first:
        assert page.goto("/").ok
    cpu, memory = page.locator("#numbers-cpu"), page.locator("#numbers-memory")
    expect(cpu).to_have_text(first.value.json()["cpu"])
    expect(memory).to_have_text(re.compile(r"^\d{1,3}%$"))

    with page.expect_response("**/api/system_info") as second:
        page.clock.run_for(5_100)
    expect(cpu).to_have_text(second.value.json()["cpu"])
    expect(memory).to_have_text(second.value.json()["memory"])

    # When the server stops answering, the panel says so instead of keeping stale numbers silently.
    page.route("**/api/system_info", lambda route: route.fulfill(status=503, json={"error": "down"}))
    page.clock.run_for(5_100)
    expect(page.locator("#numbers-server-status")).to_have_text("unavailable")


def test_sending_an_empty_pad_says_nothing_was_drawn(page):
    assert page.goto("/").ok
    requests = []
    page.on("request", lambda r: "/api/predict" in r.url and requests.append(r))
    page.get_by_role("button", name="Send", exact=True).click()
    expect(page.locator("#numbers-message")).to_contain_text("Nothing drawn")
    expect(page.locator("#numbers-digit")).to_have_text("?")
    assert not requests, "an empty pad should not be sent"


def test_a_4xx_from_the_server_shows_its_message(page):
    """A real 400 from the server (a bad `top`, slipped into the page's request) is shown."""

    def bad_top(route):
        body = json.loads(route.request.post_data)
        route.continue_(post_data=json.dumps({**body, "top": 99}))

    page.route("**/api/predict", bad_top)
    page, pad = page, None
    assert page.goto("/").ok
    pad = page.get_by_role("img", name=re.compile("Drawing area"))
    mouse_draw(page, pad, SEVEN)
    with page.expect_response("**/api/predict") as answer:
        page.get_by_role("button", name="Send", exact=True).click()
    assert answer.value.status == 400
    expect(page.locator("#numbers-message")).to_contain_text(answer.value.json()["error"])
    expect(page.locator("#numbers-digit")).to_have_text("?")


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (
            {"status": 500, "json": {"error": "The model failed (test).", "code": "internal_error"}},
            "model failed",
        ),
        # A proxy's HTML error page: no JSON to read, the status is still reported.
        ({"status": 502, "body": "<html>Bad Gateway</html>", "content_type": "text/html"}, "answered 502"),
    ],
    ids=["json-500", "html-502"],
)
def test_a_server_error_shows_a_readable_message(reply, message, page, screenshot):
    page.route("**/api/predict", lambda route: route.fulfill(**reply))
    assert page.goto("/").ok
    mouse_draw(page, page.get_by_role("img", name=re.compile("Drawing area")), SEVEN)
    page.get_by_role("button", name="Send", exact=True).click()
    expect(page.locator("#numbers-message")).to_contain_text(message)
    expect(page.locator("#numbers-digit")).to_have_text("?")
    expect(page.get_by_role("button", name="Send", exact=True)).to_be_enabled()
    screenshot(page, f"digits-error-{reply['status']}")
