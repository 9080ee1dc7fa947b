"""Every page in a real browser, on a phone and on a desktop: nothing scrolls sideways, the nav
is the same list everywhere with a skip link first, and every disclosure shows its marker."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

PHONE = {"viewport": {"width": 390, "height": 844}, "has_touch": True, "is_mobile": True}
DESKTOP = {"viewport": {"width": 1280, "height": 900}}
SIZES = {"phone": PHONE, "desktop": DESKTOP}
# Every page in the nav, in its order, with what shows once the page has drawn its content.
PAGES = {
    "/": "#numbers-pad",
    "/doodle": "#doodle-pad",
    "/classify": "#classify-form",
    "/ocr": "#ocr-form",
    "/track": "#track-stage",
    "/dashboard": "#dash-table",
    "/gallery": "#gallery-count:not(:empty)",
    # Swagger UI renders each operation after fetching /openapi.json: the widest moment of the page.
    "/docs": "#swagger-ui .opblock",
}
LINES = Path(__file__).parents[1] / "data" / "ocr" / "lines"
# What a strict Content-Security-Policy (no 'unsafe-inline') would refuse to run or apply.
INLINE = {
    "inline script": re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I),
    "event handler attribute": re.compile(r"<[^>]+\son[a-z]+\s*=", re.I),
    "style attribute": re.compile(r"<[^>]+\sstyle\s*=", re.I),
    "style element": re.compile(r"<style\b", re.I),
}


def sideways_overflow(page) -> dict | None:
    """Say how far the page scrolls sideways and which elements stick out (None when it fits)."""
    return page.evaluate(
        """() => {
            const root = document.documentElement;
            if (root.scrollWidth <= root.clientWidth) return null;
            const name = (e) => e.tagName.toLowerCase() + (e.id ? "#" + e.id : "")
                + (e.classList.length ? "." + [...e.classList].join(".") : "");
            const out = [...document.body.querySelectorAll("*")]
                .filter((e) => e.getBoundingClientRect().right > root.clientWidth + 0.5)
                .map((e) => name(e) + " right=" + Math.round(e.getBoundingClientRect().right));
            return { scrollWidth: root.scrollWidth, clientWidth: root.clientWidth, sticking_out: out.slice(0, 12) };
        }"""
    )


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("path", PAGES)
def test_no_page_scrolls_sideways(new_page, browser, path, size):
    page = new_page(browser, **SIZES[size])
    assert page.goto(path).ok
    expect(page.locator(PAGES[path]).first).to_be_visible()
    assert sideways_overflow(page) is None


def test_the_ocr_page_fits_a_phone_with_a_result(new_page, browser):
    page = new_page(browser, **PHONE)
    assert page.goto("/ocr").ok
    page.get_by_label("Image", exact=True).set_input_files(str(LINES / "payment_54.png"))
    expect(page.get_by_role("heading", name="GS1 fields")).to_be_visible()
    assert sideways_overflow(page) is None


def test_the_dashboard_fits_a_phone_with_long_figures(new_page, browser):
    page = new_page(browser, **PHONE)
    page.clock.install()
    row = {"count": 1_234_567, "mean_ms": 1234.56, "p95_ms": 10_000.0}
    paths = ("/image-64", "/image-bin", "/api/track")
    stats = {"routes": [{"path": p, "takes": "any format", **row} for p in paths], "total": 3_703_701}
    page.route("**/api/track/stats", lambda route: route.fulfill(json=stats))
    assert page.goto("/dashboard").ok
    with page.expect_response("**/api/track/stats"):
        page.clock.run_for(2_100)
    expect(page.locator("#dash-total")).to_have_text("3703701")
    assert sideways_overflow(page) is None


def test_pages_hold_no_inline_script_or_style(page):
    for path in PAGES:
        html = page.request.get(path).text()
        found = {what: pattern.findall(html) for what, pattern in INLINE.items()}
        assert not any(found.values()), f"{path}: {found}"


def test_the_nav_links_every_page_and_marks_the_current_one(page):
    for path in PAGES:
        assert page.goto(path).ok
        nav = page.get_by_role("navigation", name="Main")
        hrefs = nav.get_by_role("link").evaluate_all("links => links.map((a) => a.getAttribute('href'))")
        assert hrefs == list(PAGES)
        current = nav.locator('[aria-current="page"]')
        expect(current).to_have_count(1)
        expect(current).to_have_attribute("href", path)


def test_the_skip_link_comes_first_and_moves_to_the_content(page):
    assert page.goto("/ocr").ok
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to content")
    expect(skip).to_be_focused()
    expect(skip).to_be_visible()
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()
    # The next Tab goes on from the content, past the nav.
    page.keyboard.press("Tab")
    expect(page.locator("#ocr-file")).to_be_focused()


@pytest.mark.parametrize("path", ["/doodle", "/track", "/gallery"])
def test_every_disclosure_shows_its_marker(page, path):
    assert page.goto(path).ok
    displays = page.locator("summary").evaluate_all(
        "all => all.map((s) => s.textContent.trim() + ': ' + getComputedStyle(s).display)"
    )
    assert displays, f"{path} has no <summary>"
    assert all(d.endswith(": list-item") for d in displays), displays
