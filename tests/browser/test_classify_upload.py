"""Adding a Teachable Machine model from /classify in a real browser, classifying with it, removing it.

Each server here has its own classifier folder (the session's live server keeps the repository's).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect
from werkzeug.serving import make_server

from tests.blueprints.test_classifier_upload import DATA, export_zip
from tests.conftest import hide_environment

pytestmark = pytest.mark.browser

TOKEN = "browser-test-token-0123456789"
ZIP_NAMES = {
    "keras_h5": "converted_keras.zip",
    "tfjs": "tm-my-image-model.zip",
    "tflite": "converted_tflite.zip",
    "tflite_quantized": "converted_tflite_quantized.zip",
}


@pytest.fixture(scope="module")
def serve(tmp_path_factory) -> Iterator[Callable[..., tuple[str, Path]]]:
    """Return a function that serves a new app with its own classifier folder on a loopback port."""
    from app import create_app

    servers = []

    def start(**settings) -> tuple[str, Path]:
        folder = tmp_path_factory.mktemp("classify-upload")
        with pytest.MonkeyPatch.context() as mp:
            hide_environment(mp)
            app = create_app(
                {
                    "SAVE_IMAGES": False,
                    "LOG_LEVEL": "WARNING",
                    "IMAGE_DIR": str(folder / "images"),
                    "DATABASE_URL": f"sqlite:///{folder / 'store.db'}",
                    "CLASSIFIER_DIRS": [str(folder / "classifiers")],
                    **settings,
                }
            )
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=server.serve_forever, name="classify-upload", daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}", folder / "classifiers"

    yield start
    for server in servers:
        server.shutdown()


def choose_zip(page, fmt: str, data: bytes | None = None) -> None:
    page.locator("#add-file").set_input_files(
        files=[{"name": ZIP_NAMES[fmt], "mimeType": "application/zip", "buffer": data or export_zip(fmt)}]
    )


def test_add_a_model_classify_with_it_and_remove_it(page, serve, screenshot):
    base, folder = serve()
    assert page.goto(f"{base}/classify").ok
    expect(page.locator("#added-none")).to_be_visible()
    page.fill("#add-name", "snacks")
    choose_zip(page, "tfjs")
    page.get_by_role("button", name="Add the model").click()
    expect(page.locator("#add-message")).to_contain_text(
        "Added snacks (tfjs): it knows Snickers, Mars, Rood."
    )
    expect(page.locator("#classify-model")).to_have_value("snacks")
    expect(page.locator("#classify-labels")).to_contain_text("Snickers, Mars, Rood")
    expect(page.locator("#added-models li")).to_have_count(1)
    expect(page.locator("#added-none")).to_be_hidden()
    page.locator("#classify-file").set_input_files(str(DATA / "images" / "red.png"))
    expect(page.locator("#classify-best")).to_contain_text("Rood (51.9%)")
    expect(page.locator("#classify-top li")).to_have_count(3)
    screenshot(page, "classify-added-model")
    # Kept: a new visit lists it as added here.
    assert page.goto(f"{base}/classify").ok
    expect(page.locator("#added-models li")).to_contain_text("snacks")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Remove").click()
    expect(page.locator("#add-message")).to_contain_text("Removed snacks.")
    expect(page.locator("#added-models li")).to_have_count(0)
    expect(page.locator("#classify-model option[value=snacks]")).to_have_count(0)
    assert [p.name for p in folder.iterdir()] == [".generation"]


@pytest.mark.parametrize("fmt", ["keras_h5", "tflite", "tflite_quantized"])
def test_each_format_is_added_from_the_page(page, serve, fmt):
    base, _ = serve()
    assert page.goto(f"{base}/classify").ok
    page.fill("#add-name", "m-" + fmt.replace("_", "-"))
    choose_zip(page, fmt)
    page.get_by_role("button", name="Add the model").click()
    expect(page.locator("#add-message")).to_contain_text(f"({fmt})")
    expect(page.locator("#classify-model")).to_have_value("m-" + fmt.replace("_", "-"))


def test_a_bad_zip_says_what_is_wrong_and_adds_nothing(page, serve):
    base, folder = serve()
    assert page.goto(f"{base}/classify").ok
    page.fill("#add-name", "broken")
    choose_zip(page, "tfjs", export_zip("tfjs", drop=("weights.bin",)))
    page.get_by_role("button", name="Add the model").click()
    expect(page.locator("#add-message")).to_contain_text("weights.bin")
    expect(page.locator("#add-message")).to_have_class("message error")
    expect(page.locator("#added-models li")).to_have_count(0)
    assert not folder.exists() or list(folder.iterdir()) == []


def test_with_a_token_set_the_page_signs_in_first(page, serve):
    base, _ = serve(ADMIN_TOKEN=TOKEN)
    assert page.goto(f"{base}/classify").ok
    page.fill("#add-name", "fruit")
    choose_zip(page, "tflite_quantized")
    page.get_by_role("button", name="Add the model").click()
    expect(page.locator("#add-message")).to_contain_text("Sign in with the admin token")
    page.fill("#admin-token", "wrong")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("button", name="Add the model").click()
    expect(page.locator("#add-message")).to_contain_text("The admin token is not right")
    page.fill("#admin-token", TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#admin-state")).to_contain_text("Signed in")
    page.get_by_role("button", name="Add the model").click()
    expect(page.locator("#add-message")).to_contain_text("Added fruit (tflite_quantized)")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Remove").click()
    expect(page.locator("#add-message")).to_contain_text("Removed fruit.")
