"""The models page in a real browser: reached from the footer, fits a phone, its card links open."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.test_layout import SIZES, sideways_overflow

pytestmark = pytest.mark.browser


@pytest.mark.parametrize("size", SIZES)
def test_the_footer_opens_the_models_page_and_it_fits(new_page, browser, size):
    page = new_page(browser, **SIZES[size])
    assert page.goto("/").ok
    page.get_by_role("contentinfo").get_by_role("link", name="models").click()
    expect(page).to_have_url(re.compile(r"/models$"))
    expect(page.get_by_role("heading", name="numbers", exact=True)).to_be_visible()
    expect(page.locator("section.model")).not_to_have_count(0)
    assert sideways_overflow(page) is None


def test_a_card_link_opens_the_card(page):
    assert page.goto("/models").ok
    with page.expect_navigation():
        page.get_by_role("link", name="tracking.md").click()
    assert page.url.endswith("/models/tracking/tracking.md")
    assert "tracking" in page.locator("body").inner_text()
