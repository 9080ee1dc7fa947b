"""The models page (/models) and the model cards it links, the footer's "models" link."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from app import create_app
from tests.conftest import hide_environment

ROOT = Path(__file__).resolve().parents[2]
# What a strict Content-Security-Policy (no 'unsafe-inline') would refuse.
INLINE = re.compile(r"<script(?![^>]*\bsrc=)|<[^>]+\s(?:on[a-z]+|style)\s*=|<style\b", re.I)


class Sections(HTMLParser):
    """Each model's <section>: its heading and its facts (dt -> text of dd), and its links."""

    def __init__(self) -> None:
        super().__init__()
        self.models: dict[str, dict] = {}
        self.current: dict | None = None
        self.tag = ""
        self.term = ""

    def handle_starttag(self, tag, attrs):
        self.tag = tag
        if tag == "section":
            self.current = {"facts": {}, "links": []}
        elif tag == "a" and self.current is not None:
            self.current["links"].append(dict(attrs)["href"])

    def handle_endtag(self, tag):
        if tag == "section" and self.current is not None:
            self.models[self.current["name"]] = self.current
            self.current = None

    def handle_data(self, data):
        if self.current is None or not data.strip():
            return
        if self.tag == "h2":
            self.current["name"] = data.strip()
        elif self.tag == "dt":
            self.term = data.strip()
        elif self.tag in ("dd", "code", "a"):
            facts = self.current["facts"]
            facts[self.term] = (facts.get(self.term, "") + " " + data.strip()).strip()


def sections(html: str) -> dict[str, dict]:
    parser = Sections()
    parser.feed(html)
    return parser.models


def test_models_page_shows_each_configured_model(client):
    page = client.get("/models")
    assert page.status_code == 200 and page.mimetype == "text/html"
    models = sections(page.get_data(as_text=True))
    ready = {m["name"]: m for m in client.get("/ready").get_json()["models"]}
    assert set(models) == set(ready)
    for name, model in models.items():
        facts = model["facts"]
        assert facts["Kind"] == ready[name]["kind"]
        assert facts["Version"] == ready[name]["version"]
        assert re.fullmatch(r"\d+\.\d ms", facts["Load time"])
        assert float(facts["Load time"].split()[0]) == pytest.approx(ready[name]["load_ms"], abs=0.05)
    assert models["numbers"]["facts"]["Labels"] == "0, 1, 2, 3, 4, 5, 6, 7, 8, 9"
    doodles = models["doodles"]["facts"]["Labels"]
    assert doodles.startswith("airplane, apple, banana") and doodles.endswith("… (24 in all)")
    assert (
        models["ocr"]["facts"]["Labels"].startswith("0, 1, 2")
        and "(44 in all)" in models["ocr"]["facts"]["Labels"]
    )
    assert models["tracking"]["facts"]["Labels"] == "none: it answers a position"
    assert models["flask-mug"]["facts"]["Labels"] == "Flask, Mug"


def test_each_card_link_serves_the_card_as_text(client):
    models = sections(client.get("/models").get_data(as_text=True))
    links = {name: [h for h in m["links"] if h.startswith("/models/")] for name, m in models.items()}
    assert links["numbers"] == ["/models/numbers/numbers.md"]
    assert links["tracking"] == ["/models/tracking/tracking.md", "/models/tracking/face_detector.md"]
    assert links["flask-mug"] == [] and models["flask-mug"]["facts"]["Card"] == "none"
    for hrefs in links.values():
        for href in hrefs:
            card = client.get(href)
            assert card.status_code == 200
            assert card.headers["Content-Type"] == "text/plain; charset=utf-8"
            assert card.data == (ROOT / "models" / href.rsplit("/", 1)[1]).read_bytes()
            card.close()


@pytest.mark.parametrize(
    "path",
    [
        "/models/numbers/doodles.md",  # a card, but not this model's
        "/models/numbers/numbers.onnx",
        "/models/nothing/numbers.md",
        "/models/numbers/..%2Fapp.py",
        "/models/numbers/%2E%2E%2FREADME.md",
        "/models/numbers/README.md",
    ],
)
def test_only_the_cards_of_configured_models_are_served(client, path):
    assert client.get(path).status_code == 404


def test_a_model_that_failed_shows_why_without_its_path(base_app_config, tmp_path, monkeypatch):
    hide_environment(monkeypatch)
    missing = tmp_path / "gone" / "numbers.onnx"
    app = create_app(
        {
            **base_app_config,
            "CLASSIFIER_DIRS": [],
            "MODELS": {"numbers": {"type": "numbers", "path": str(missing)}},
        }
    )
    html = app.test_client().get("/models").get_data(as_text=True)
    facts = sections(html)["numbers"]["facts"]
    assert facts["Status"].startswith("Not loaded:") and "Version" not in facts
    assert str(tmp_path) not in html


def test_the_footer_links_the_models_page_on_every_page(client):
    for path in ("/", "/gallery", "/docs", "/models"):
        html = client.get(path).get_data(as_text=True)
        footer = html[html.index('<footer class="site-footer">') :]
        assert 'href="/models"' in footer and 'href="/ready"' not in footer


def test_the_models_page_holds_no_inline_script_or_style(client):
    html = client.get("/models").get_data(as_text=True)
    assert not INLINE.findall(html)
    assert 'href="/static/css/models.css"' in html
    assert client.get("/static/css/models.css").status_code == 200
