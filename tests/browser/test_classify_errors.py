"""The photo page `/classify` in a real browser: a server error reads as a message, not silence.

(test_classifier_pages.py covers a real photo's labels and the server's 4xx for a bad file.)
"""

from __future__ import annotations

import io

import pytest
from PIL import Image
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


def photo() -> bytes:
    """A small grey JPEG."""
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (120, 120, 120)).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (
            {"status": 500, "json": {"error": "The classifier failed (test).", "code": "internal_error"}},
            "The classifier failed (test).",
        ),
        (
            {"status": 504, "body": "<html>Gateway Timeout</html>", "content_type": "text/html"},
            "The server answered 504.",
        ),
    ],
    ids=["json-500", "html-504"],
)
def test_a_server_error_shows_a_readable_message(reply, message, page):
    page.route("**/api/classifier/**", lambda route: route.fulfill(**reply))
    assert page.goto("/classify").ok
    page.get_by_label("Photo", exact=True).set_input_files(
        files=[{"name": "p.jpg", "mimeType": "image/jpeg", "buffer": photo()}]
    )
    expect(page.locator("#classify-message")).to_have_text(message)
    expect(page.get_by_role("list", name="Most likely labels").get_by_role("listitem")).to_have_count(0)
    expect(page.get_by_role("button", name="Classify")).to_be_enabled()
