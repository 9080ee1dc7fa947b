"""The doodle page `/doodle` in a real browser: a drawn clock is among the top-3 guesses."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.strokes import circle, ink_fraction, mouse_draw, touch_draw

pytestmark = pytest.mark.browser

PHONE = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 3,
    "has_touch": True,
    "is_mobile": True,
}
# A clock face: a circle, then the hour and minute hands from the centre.
CLOCK = [*circle(0.5, 0.5, 0.33), [(0.5, 0.5), (0.5, 0.26)], [(0.5, 0.5), (0.68, 0.5)]]
# Enough for the error tests: any drawing makes the page ask the server.
LINE = [[(0.3, 0.5), (0.7, 0.5)]]


def top_three(page):
    """The list of the three most likely things."""
    return page.get_by_role("list", name="Three most likely things").get_by_role("listitem")


@pytest.mark.parametrize(
    ("pointer", "options", "draw"), [("mouse", {}, mouse_draw), ("touch", PHONE, touch_draw)]
)
def test_a_drawn_clock_is_in_the_top_three(pointer, options, draw, new_page, browser, screenshot):
    page = new_page(browser, **options)
    assert page.goto("/doodle").ok
    pad = page.get_by_role("img", name=re.compile("Drawing area"))
    draw(page, pad, CLOCK)
    assert ink_fraction(pad) > 0.01
    # Guesses come while drawing; wait for the answer to the finished drawing.
    expect(top_three(page)).to_have_count(3)
    expect(top_three(page).filter(has_text="clock")).to_have_count(1, timeout=10_000)
    for row in top_three(page).all():
        expect(row).to_have_text(re.compile(r"^[a-z ]+\s*\d{1,3}\.\d%$"))
    expect(page.locator("#doodle-best")).to_have_text(re.compile(r"^[a-z ]+ \(\d{1,3}\.\d%\)$"))
    expect(page.locator("#doodle-message")).to_be_empty()
    screenshot(page, f"doodle-{pointer}")

    page.get_by_role("button", name="Clear").click()
    assert ink_fraction(pad) == 0
    expect(top_three(page)).to_have_count(0)


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (
            {"status": 500, "json": {"error": "The doodle model failed (test).", "code": "internal_error"}},
            "failed",
        ),
        ({"status": 503, "body": "Service Unavailable", "content_type": "text/plain"}, "answered 503"),
    ],
    ids=["json-500", "text-503"],
)
def test_a_server_error_shows_a_readable_message(reply, message, page):
    page.route("**/api/classifier/**", lambda route: route.fulfill(**reply))
    assert page.goto("/doodle").ok
    mouse_draw(page, page.get_by_role("img", name=re.compile("Drawing area")), LINE)
    expect(page.locator("#doodle-message")).to_contain_text(message)
    expect(top_three(page)).to_have_count(0)


def test_a_4xx_from_the_server_shows_its_message(page):
    """A real 400 from the server (a bad `top` slipped into the page's request) is shown."""

    def bad_top(route):
        route.continue_(post_data=route.request.post_data.replace('"top":3', '"top":"three"'))

    page.route("**/api/classifier/**", bad_top)
    assert page.goto("/doodle").ok
    with page.expect_response("**/api/classifier/**") as answer:
        mouse_draw(page, page.get_by_role("img", name=re.compile("Drawing area")), LINE)
    assert 400 <= answer.value.status < 500, answer.value.text()
    expect(page.locator("#doodle-message")).to_contain_text(answer.value.json()["error"])
