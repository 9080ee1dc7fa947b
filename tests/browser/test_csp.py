"""Every page under the service's Content-Security-Policy in a real browser: nothing is refused.

The policy (blueprints/instrumentation.py) has no 'unsafe-inline' and no outside origin. Chromium
reports each refused script, style, image or request as a `securitypolicyviolation` event and a
console error; a page that works only because a test bypassed the policy would pass nowhere else.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.test_layout import PAGES

pytestmark = pytest.mark.browser

# Installed before any page script runs (Playwright's init scripts are not subject to the CSP).
RECORD_VIOLATIONS = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__csp.push(`${e.effectiveDirective} refused ${e.blockedURI || "inline"} at ${e.sourceFile}:${e.lineNumber}`);
});
"""


def open_recorded(new_page, browser):
    page = new_page(browser)
    page.add_init_script(RECORD_VIOLATIONS)
    errors: list[str] = []
    page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
    return page, errors


def violations(page) -> list[str]:
    return page.evaluate("window.__csp")


@pytest.mark.parametrize("path", PAGES)
def test_no_page_breaks_the_policy(new_page, browser, path):
    page, errors = open_recorded(new_page, browser)
    response = page.goto(path)
    assert response.ok
    assert "'unsafe-inline'" not in response.headers["content-security-policy"]
    expect(page.locator(PAGES[path]).first).to_be_visible()
    page.wait_for_load_state("networkidle")
    assert violations(page) == []
    assert errors == []


def test_swagger_ui_tries_a_call_under_the_policy(new_page, browser, screenshot):
    """Expand an operation, try it out and show the answer: Swagger UI's whole round trip."""
    page, errors = open_recorded(new_page, browser)
    assert page.goto("/docs").ok
    block = page.locator(".opblock").filter(has=page.locator('.opblock-summary-path[data-path="/health"]'))
    block.locator(".opblock-summary").click()
    block.get_by_role("button", name="Try it out").click()
    block.get_by_role("button", name="Execute").click()
    expect(block.locator(".live-responses-table td.response-col_status:not(.col_header)")).to_have_text("200")
    expect(block.locator(".live-responses-table").get_by_text('"status": "ok"')).to_be_visible()
    screenshot(page, "docs-try-it-out")
    assert violations(page) == []
    assert errors == []


def test_the_check_sees_a_violation(browser, live_server):
    """The recorder works: an inline script added to a page is refused and reported.

    Its own context, outside the fixtures that fail any test whose page broke the policy.
    """
    context = browser.new_context(base_url=live_server)
    try:
        page = context.new_page()
        page.add_init_script(RECORD_VIOLATIONS)
        errors: list[str] = []
        page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
        assert page.goto("/health").ok
        page.evaluate(
            "() => { const s = document.createElement('script'); s.textContent = 'window.ran = 1';"
            " document.body.append(s); }"
        )
        page.wait_for_function("window.__csp.length > 0")
        assert page.evaluate("window.ran") is None
        assert any(v.startswith("script-src") for v in violations(page)), violations(page)
        assert any("Content Security Policy" in e for e in errors), errors
    finally:
        context.close()
