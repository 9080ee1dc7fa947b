"""Browser fixtures: the real app on a loopback port, Debian's Chromium through Playwright.

- `live_server`: create_app with the real models, SAVE_IMAGES on and a temporary store, served by
  werkzeug's threaded server in a background thread; yields its base URL.
- `browser`: one headless Chromium for the session (`launch_chromium` starts others, e.g. with a
  fake camera). Never downloads a browser: without /usr/bin/chromium every browser test skips.
- `page`: a fresh context per test that records every request; the test fails if one went
  anywhere but 127.0.0.1/localhost, if the page threw an uncaught JavaScript error, or if the
  browser refused something under the Content-Security-Policy.
- `screenshot(page, name)` keeps a PNG under test-artifacts/screenshots/; a failed test keeps one too.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from werkzeug.serving import make_server

from tests.conftest import hide_environment

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}
# Schemes that never leave the browser.
LOCAL_SCHEMES = {"data", "blob", "about"}
DESKTOP = {"width": 1280, "height": 900}


def is_local(url: str) -> bool:
    """Tell whether a request URL stays on this machine."""
    parts = urlsplit(url)
    if parts.scheme in LOCAL_SCHEMES:
        return True
    return parts.scheme in ("http", "https", "ws", "wss") and (parts.hostname or "") in LOCAL_HOSTS


def chromium_missing_reason() -> str | None:
    """Say why browser tests cannot run here, or None when they can."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install chromium chromium-driver)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright; never `playwright install`)"
    return None


# Test modules import Playwright; without it they are not collected at all (the reason is printed).
if importlib.util.find_spec("playwright") is None:
    collect_ignore_glob = ["test_*.py"]
    print("browser tests not collected: playwright is not installed")


def pytest_collection_modifyitems(config, items) -> None:
    """Skip every browser test, with the reason, when Chromium or Playwright is missing."""
    reason = chromium_missing_reason()
    if reason is None:
        return
    print(f"\nbrowser tests skipped: {reason}")
    marker = pytest.mark.skip(reason=reason)
    for item in items:
        if "browser" in item.keywords:
            item.add_marker(marker)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item) -> Iterator[None]:
    """After the test body, fail it for requests that left loopback, uncaught page errors or CSP refusals."""
    result = yield
    for recorder in item.stash.get(RECORDERS, []):
        outside = [url for url in recorder.urls if not is_local(url)]
        assert not outside, f"the page requested outside 127.0.0.1: {outside}"
        assert not recorder.page_errors, f"uncaught JavaScript errors on the page: {recorder.page_errors}"
        refused = [e for e in recorder.console_errors if "Content Security Policy" in e]
        assert not refused, f"the page broke its Content-Security-Policy: {refused}"
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the item so fixtures can see a failure."""
    report = yield
    item.stash.setdefault(REPORTS, {})[report.when] = report
    return report


class Recorder:
    """Every request URL a browser context made, its console errors and uncaught page errors."""

    def __init__(self) -> None:
        self.urls: list[str] = []
        self.console_errors: list[str] = []
        self.page_errors: list[str] = []

    def attach(self, context) -> None:
        """Listen to `context` and block (and record) anything not on loopback."""
        context.on("request", lambda request: self.urls.append(request.url))
        context.on("page", self.attach_page)
        # Block outside requests so a failing test never reaches the internet; it still fails.
        context.route(lambda url: not is_local(url), lambda route: route.abort("blockedbyclient"))

    def attach_page(self, page) -> None:
        """Record console errors and uncaught exceptions of one page."""
        page.on("console", lambda msg: msg.type == "error" and self.console_errors.append(msg.text))
        page.on("pageerror", lambda exc: self.page_errors.append(str(exc)))


RECORDERS = pytest.StashKey[list[Recorder]]()
REPORTS = pytest.StashKey[dict]()


@pytest.fixture(scope="session")
def live_server(tmp_path_factory) -> Iterator[str]:
    """Serve the real app on a free loopback port, saving images to a temporary store."""
    from app import create_app

    store = tmp_path_factory.mktemp("browser-store")
    with pytest.MonkeyPatch.context() as mp:
        hide_environment(mp)
        app = create_app(
            {
                "SAVE_IMAGES": True,
                "LOG_LEVEL": "WARNING",
                "IMAGE_DIR": str(store / "images"),
                "DATABASE_URL": f"sqlite:///{store / 'store.db'}",
            }
        )
    # The access log of every static file would bury a failing test's own output.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def playwright_instance():
    """Start Playwright's driver once per session."""
    reason = chromium_missing_reason()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import expect, sync_playwright

    # Assertions wait up to 10 s (Playwright's default is 5): a busy CI machine is slow, not wrong.
    expect.set_options(timeout=10_000)

    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def launch_chromium(playwright_instance) -> Callable:
    """Return a function that launches Debian's headless Chromium with extra arguments."""

    def launch(*extra_args: str):
        return playwright_instance.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=[*CHROMIUM_ARGS, *extra_args]
        )

    return launch


@pytest.fixture(scope="session")
def browser(launch_chromium):
    """One headless Chromium shared by the session."""
    browser = launch_chromium()
    yield browser
    browser.close()


@pytest.fixture
def new_page(request, live_server) -> Iterator[Callable]:
    """Return a function opening a recorded page in a new context of a given browser."""
    contexts = []
    recorders = request.node.stash.setdefault(RECORDERS, [])

    def open_page(browser, **context_options):
        context_options.setdefault("viewport", DESKTOP)
        context = browser.new_context(base_url=live_server, **context_options)
        # Generous: on a loaded 2-core machine a navigation can take seconds; a hang still fails.
        context.set_default_timeout(20_000)
        context.set_default_navigation_timeout(30_000)
        recorder = Recorder()
        recorder.attach(context)
        recorders.append(recorder)
        contexts.append(context)
        return context.new_page()

    yield open_page
    failed = any(r.failed for r in request.node.stash.get(REPORTS, {}).values())
    for i, context in enumerate(contexts):
        if failed:
            for j, page in enumerate(context.pages):
                name = f"FAILED-{request.node.name}-{i}-{j}"
                # The page may be gone; the failure itself is what matters.
                with contextlib.suppress(Exception):
                    page.screenshot(path=str(SCREENSHOTS / f"{safe_name(name)}.png"), full_page=True)
        context.close()
    for recorder in recorders:
        if recorder.console_errors:
            print(f"console errors: {recorder.console_errors}")


@pytest.fixture
def page(new_page, browser):
    """A desktop-sized page in the shared browser, recording every request."""
    return new_page(browser)


def safe_name(name: str) -> str:
    """Make a test name usable as a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:120]


@pytest.fixture(scope="session", autouse=True)
def screenshots_folder() -> Path:
    """Create the screenshots folder and drop the failure shots of an earlier run."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for old in SCREENSHOTS.glob("FAILED-*.png"):
        old.unlink()
    return SCREENSHOTS


@pytest.fixture(scope="session")
def screenshot(screenshots_folder) -> Callable:
    """Return a function saving a full-page screenshot under test-artifacts/screenshots/."""

    def save(page, name: str) -> Path:
        path = SCREENSHOTS / f"{safe_name(name)}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return save
