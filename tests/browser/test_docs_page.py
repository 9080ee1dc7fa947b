"""The API page in a real browser: Swagger UI from static/ renders every documented route."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


def test_docs_page_lists_the_api_from_local_files(page, screenshot):
    response = page.goto("/docs")
    assert response.ok
    # Swagger UI renders one block per operation once /openapi.json has loaded.
    expect(page.get_by_text("/api/system_info").first).to_be_visible()
    expect(page.get_by_role("link", name="API", exact=True)).to_have_attribute("aria-current", "page")
    screenshot(page, "docs")
