"""The tracking dashboard `/dashboard` in a real browser: counts refresh as requests arrive."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

FACE = Path(__file__).parents[1] / "data" / "tracking" / "frame_0.jpg"
REFRESH_MS = 2_000


def cell(page, path: str, field: str):
    """One figure of one route's row."""
    return page.locator(f'#dash-rows tr[data-path="{path}"] [data-field="{field}"]')


def test_the_counts_follow_new_tracking_requests(page, screenshot):
    page.clock.install()
    assert page.goto("/dashboard").ok
    table = page.get_by_role("table")
    for path in ("/image-64", "/image-bin", "/api/track"):
        expect(table.get_by_role("row", name=path)).to_be_visible()
    before = {path: int(cell(page, path, "count").inner_text()) for path in ("/image-64", "/image-bin")}
    total = int(page.locator("#dash-total").inner_text())

    jpeg = FACE.read_bytes()
    upload = {"image": {"name": "face.jpg", "mimeType": "image/jpeg", "buffer": jpeg}}
    assert page.request.post("/image-bin", multipart=upload).ok
    assert page.request.post("/image-64", data={"image": base64.b64encode(jpeg).decode()}).ok
    assert page.request.post("/image-64", data={"image": "%%% not base64"}).status == 400

    with page.expect_response("**/api/track/stats"):
        page.clock.run_for(REFRESH_MS + 100)
    expect(cell(page, "/image-bin", "count")).to_have_text(str(before["/image-bin"] + 1))
    # A request answered with an error counts too.
    expect(cell(page, "/image-64", "count")).to_have_text(str(before["/image-64"] + 2))
    expect(page.locator("#dash-total")).to_have_text(str(total + 3))
    expect(cell(page, "/image-bin", "mean_ms")).to_have_text(re.compile(r"^\d+(\.\d+)?$"))
    expect(cell(page, "/image-bin", "p95_ms")).to_have_text(re.compile(r"^\d+(\.\d+)?$"))
    expect(page.locator("#dash-updated")).to_contain_text("Updated at")
    screenshot(page, "dashboard")

    # Paused, the figures stay as they are.
    pause = page.get_by_role("button", name="Pause updates")
    pause.click()
    expect(page.get_by_role("button", name="Resume updates")).to_have_attribute("aria-pressed", "true")
    assert page.request.post("/image-bin", multipart=upload).ok
    page.clock.run_for(2 * REFRESH_MS)
    expect(cell(page, "/image-bin", "count")).to_have_text(str(before["/image-bin"] + 1))
    with page.expect_response("**/api/track/stats"):
        page.get_by_role("button", name="Resume updates").click()
    expect(cell(page, "/image-bin", "count")).to_have_text(str(before["/image-bin"] + 2))


def test_a_failing_refresh_says_so(page):
    page.clock.install()
    page.route(
        "**/api/track/stats",
        lambda route: route.fulfill(status=500, json={"error": "Metrics are unavailable (test)."}),
    )
    assert page.goto("/dashboard").ok
    page.clock.run_for(REFRESH_MS + 100)
    expect(page.get_by_role("status")).to_have_text(
        "Cannot refresh the figures: Metrics are unavailable (test)."
    )
