"""The OCR API (POST /api/ocr) and its page at /ocr."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from app import create_app
from tests.conftest import data_url, hide_environment, png_bytes

DATA = Path(__file__).parents[1] / "data" / "ocr" / "lines"
EXAMPLE_54 = "(253)3610321456881 1234567890(17)010120(3902)001000 *11*"
EXAMPLE_53 = "(253)3610321456881 1234567890(17)010120(3902)001000 *5*"


@pytest.fixture(scope="module")
def app(base_app_config):
    """One app for the module, serving only the OCR model: built once, so tests stay fast."""
    with pytest.MonkeyPatch.context() as mp:
        hide_environment(mp)
        yield create_app(
            {
                **base_app_config,
                "MODELS": {"ocr": {"type": "ocr", "path": "models/ocr.onnx"}},
                "CLASSIFIER_DIRS": [],
            }
        )


def fixture_bytes(name: str) -> bytes:
    return (DATA / name).read_bytes()


def fixture_gray(name: str) -> np.ndarray:
    return cv2.imread(str(DATA / name), cv2.IMREAD_GRAYSCALE)


def test_multipart_upload_reads_the_line(client):
    r = client.post("/api/ocr", data={"image": (io.BytesIO(fixture_bytes("payment_54.png")), "line.png")})
    assert r.status_code == 200, r.get_data(as_text=True)
    body = r.get_json()
    assert body["text"] == EXAMPLE_54
    assert body["digits"] == "2533610321456881123456789017010120390200100011"
    assert body["confidence"] == min(c["confidence"] for c in body["characters"])
    assert len(body["characters"]) == 54
    first = body["characters"][0]
    assert first["char"] == "(" and len(first["box"]) == 4
    assert [line["text"] for line in body["lines"]] == [EXAMPLE_54]
    fields = body["fields"]
    assert fields["253"]["name"] == "GDTI" and fields["253"]["check_digit"]["valid"] is True
    assert fields["17"]["date"] == "2001-01-20"
    assert fields["3902"]["amount"] == "10.00"
    assert fields["control_key"]["value"] == "11"


def test_data_url_and_raw_bytes(client):
    png = fixture_bytes("payment_53.png")
    by_json = client.post("/api/ocr", json={"image": data_url(png)}).get_json()
    raw = client.post("/api/ocr", data=png, content_type="image/png").get_json()
    plain_b64 = client.post("/api/ocr", json={"image": base64.b64encode(png).decode()}).get_json()
    assert by_json["text"] == raw["text"] == plain_b64["text"] == EXAMPLE_53


@pytest.mark.parametrize("colour", [False, True])
@pytest.mark.parametrize("as_string", [True, False])
def test_legacy_nested_array(client, colour, as_string):
    """The original service's format: {"image": "<JSON string of a nested uint8 array>"}."""
    image = fixture_gray("payment_53.png")
    if colour:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    nested = image.tolist()
    r = client.post("/api/ocr", json={"image": json.dumps(nested) if as_string else nested})
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.get_json()["text"] == EXAMPLE_53


def test_legacy_probabilities_format(client):
    nested = json.dumps(fixture_gray("payment_54.png").tolist())
    r = client.post("/api/ocr", json={"image": nested, "format": "probabilities"})
    assert r.status_code == 200
    probs = r.get_json()
    assert isinstance(probs, list) and len(probs) == 46  # 54 glyphs less ( ) ( ) ( ) * *
    assert all(len(p) == 10 and abs(sum(p) - 1) < 1e-3 for p in probs)
    assert "".join(str(int(np.argmax(p))) for p in probs) == "2533610321456881123456789017010120390200100011"


def test_format_from_a_form_field(client):
    data = {"image": (io.BytesIO(fixture_bytes("payment_53.png")), "l.png"), "format": "probabilities"}
    r = client.post("/api/ocr", data=data)
    assert r.status_code == 200 and len(r.get_json()) == 45


def test_multi_line_image_returns_each_line(client):
    r = client.post("/api/ocr", data=fixture_bytes("three_lines.png"), content_type="image/png")
    body = r.get_json()
    assert [line["text"] for line in body["lines"]] == [
        "(415)3014531200000(8020)12345678901",
        EXAMPLE_54,
        "0123456789 +-/<>",
    ]
    assert body["text"] == "\n".join(line["text"] for line in body["lines"])
    # The first GS1 line gives the top-level fields; every line keeps its own.
    assert "415" in body["fields"] and "253" in body["lines"][1]["fields"]
    assert body["lines"][2]["fields"] == {}
    tops = [line["box"][1] for line in body["lines"]]
    assert tops == sorted(tops)


def test_invalid_check_digit_is_reported(client):
    body = client.post(
        "/api/ocr", data=fixture_bytes("payment_bad_check.png"), content_type="image/png"
    ).get_json()
    assert body["text"].startswith("(253)3610321456882")
    assert body["fields"]["253"]["check_digit"] == {"valid": False, "found": "2", "expected": "1"}
    assert body["fields"]["valid"] is False


def test_blank_image_is_empty_text(client):
    r = client.post("/api/ocr", data=png_bytes(np.full((50, 300), 255, np.uint8)), content_type="image/png")
    assert r.status_code == 200
    assert r.get_json()["text"] == "" and r.get_json()["lines"] == []


def test_image_is_kept_with_the_text(client, monkeypatch):
    kept = {}
    monkeypatch.setattr("blueprints.ocr.keep_image", lambda image, **kw: kept.update(kw))
    client.post("/api/ocr", data=fixture_bytes("payment_54.png"), content_type="image/png")
    assert kept["endpoint"] == "ocr" and kept["model"] == "ocr"
    assert kept["prediction"] == EXAMPLE_54 and 0 < kept["confidence"] <= 1


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"data": b"", "content_type": "application/json"}, 400, "empty_body"),
        ({"data": b"{not json", "content_type": "application/json"}, 400, "invalid_json"),
        ({"json": {"picture": "x"}}, 400, "missing_image"),
        ({"json": {"image": ""}}, 400, "missing_image"),
        ({"json": {"image": 42}}, 400, "invalid_image_field"),
        ({"json": {"image": "data:image/png;base64,@@@"}}, 400, "invalid_base64"),
        ({"json": {"image": data_url(b"hello, not an image")}}, 415, "not_an_image"),
        ({"json": {"image": "[[1, 2], [3]]"}}, 400, "invalid_array"),
        ({"json": {"image": "[[1, 2], [3, 4"}}, 400, "invalid_array"),
        ({"json": {"image": "[[1, 2], [3, 999]]"}}, 400, "invalid_array"),
        ({"json": {"image": [[[1, 2, 3, 4, 5]]]}}, 400, "invalid_array"),
        ({"json": {"image": np.zeros((4, 4), int).tolist()}}, 422, "image_too_small"),
        ({"data": b"GIF89a-truncated", "content_type": "image/gif"}, 415, "not_an_image"),
    ],
)
def test_bad_input_is_a_clear_json_error(client, kwargs, status, code):
    r = client.post("/api/ocr", **kwargs)
    assert r.status_code == status, r.get_data(as_text=True)
    body = r.get_json()
    assert body["code"] == code and body["error"]


@pytest.mark.parametrize("fmt", ["json", "digits", 3, ["probabilities"]])
def test_bad_format_is_400(client, fmt):
    r = client.post("/api/ocr", json={"image": data_url(fixture_bytes("payment_53.png")), "format": fmt})
    assert r.status_code == 400
    assert r.get_json()["code"] == "invalid_format"


def test_get_is_405_json(client):
    r = client.get("/api/ocr")
    assert r.status_code == 405 and r.get_json()["code"] == "method_not_allowed"


def test_model_not_loaded_is_503(base_app_config, tmp_path):
    app = create_app(
        {
            **base_app_config,
            "MODELS": {"ocr": {"type": "ocr", "path": str(tmp_path / "missing.onnx")}},
            "CLASSIFIER_DIRS": [],
        }
    )
    r = app.test_client().post("/api/ocr", data=fixture_bytes("payment_53.png"), content_type="image/png")
    assert r.status_code == 503 and r.get_json()["code"] == "model_not_loaded"


def test_page(client):
    r = client.get("/ocr")
    assert r.status_code == 200
    html = r.get_data(as_text=True)
    assert "js/ocr.js" in html and 'id="ocr-file"' in html and 'id="ocr-paste"' in html


def test_openapi_documents_the_route(client):
    spec = client.get("/openapi.json").get_json()
    op = spec["paths"]["/api/ocr"]["post"]
    assert "probabilities" in json.dumps(op)
    assert "OcrResult" in spec["components"]["schemas"]


NEIGHBOURS = Path(__file__).parents[1] / "data" / "ocr" / "neighbours-ocrb"
# 33 of 36 read exactly when the model was committed (2026-12); the one before read 8.
NEIGHBOUR_FLOOR = 30


@pytest.mark.slow
def test_print_touching_the_line_is_not_read_into_it(client):
    """Bands cut from documents: other print just above/below, touching or nearly (36 OCR-B lines).

    Made by training/ocr_evalsets.py with its own seed (see labels.tsv). The model before the
    band-fitting segmentation read 8 of them exactly (22%); the current one 33 (floor: NEIGHBOUR_FLOOR).
    """
    rows = [r.split("\t") for r in (NEIGHBOURS / "labels.tsv").read_text().splitlines() if r[:1] != "#"]
    exact = 0
    for name, text in rows:
        r = client.post("/api/ocr", data=(NEIGHBOURS / name).read_bytes(), content_type="image/jpeg")
        assert r.status_code == 200
        exact += r.get_json()["text"] == text
    assert exact >= NEIGHBOUR_FLOOR, f"{exact}/{len(rows)} exact"
