"""/openapi.json against the running app: every documented route answers what the document says.

One table calls every documented operation (and some of its errors); each answer's status must be
documented and its body must validate against that response's schema in /openapi.json.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from apispec_webframeworks.flask import FlaskPlugin
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from PIL import Image, ImageDraw

from app import create_app
from tests.conftest import data_url, hide_environment, png_bytes

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
METHODS = ("get", "post", "put", "patch", "delete")


def digit() -> bytes:
    """A thick stroke, as a drawn 1."""
    canvas = np.zeros((64, 64), np.uint8)
    canvas[10:54, 28:36] = 255
    return png_bytes(canvas)


def circle() -> bytes:
    """A circle outline on white, a doodle."""
    img = Image.new("RGB", (128, 128), (255, 255, 255))
    ImageDraw.Draw(img).ellipse((20, 20, 108, 108), outline=(0, 0, 0), width=6)
    return png_bytes(np.asarray(img))


def face() -> bytes:
    return (DATA / "tracking" / "frame_0.jpg").read_bytes()


def ocr_line() -> bytes:
    return (DATA / "ocr" / "lines" / "gs1_gtin.png").read_bytes()


def upload_form(data: bytes, field: str = "file", **fields: str) -> dict[str, Any]:
    return {"data": {field: (io.BytesIO(data), "x.png"), **fields}, "content_type": "multipart/form-data"}


def raw(data: bytes, mime: str = "image/png") -> dict[str, Any]:
    return {"data": data, "content_type": mime}


# (method, documented path, request arguments, expected status); {image_id} is a stored image.
Case = tuple[str, str, Callable[[], dict[str, Any]], int]
CASES: list[Case] = [
    ("get", "/api/system_info", dict, 200),
    ("get", "/health", dict, 200),
    ("get", "/ready", dict, 200),
    ("post", "/api/predict", lambda: {"json": {"image": data_url(digit())}}, 200),
    ("post", "/api/predict", lambda: {"json": {"image": data_url(digit()), "top": 3}}, 200),
    ("post", "/api/predict", lambda: raw(digit()), 200),
    ("post", "/api/predict", lambda: {"json": {"image": data_url(digit()), "top": 0}}, 400),
    ("post", "/api/predict", lambda: {"json": {}}, 400),
    ("post", "/api/predict", lambda: raw(b"not an image"), 415),
    ("get", "/api/classifier", dict, 400),
    ("post", "/api/classifier", lambda: {"json": {"base64_drawing": data_url(circle())}}, 200),
    ("post", "/api/classifier", lambda: upload_form(circle(), "image", top="2"), 200),
    ("get", "/api/classifier/models", dict, 200),
    ("get", "/api/classifier/doodles", dict, 400),
    ("get", "/api/classifier/nothing", dict, 404),
    ("post", "/api/classifier/doodles?top=2", lambda: raw(circle()), 200),
    ("post", "/api/classifier/nothing", lambda: raw(circle()), 404),
    # Adding and removing classifiers: the refusals (a success writes to models/classifiers).
    ("post", "/api/classifier/models", lambda: upload_form(b"not a zip", name="x"), 400),
    ("delete", "/api/classifier/models/flask-mug", dict, 409),
    ("delete", "/api/classifier/models/nothing", dict, 404),
    ("post", "/api/ocr", lambda: raw(ocr_line()), 200),
    ("post", "/api/ocr", lambda: {"json": {"image": data_url(ocr_line()), "format": "probabilities"}}, 200),
    ("post", "/api/ocr", lambda: {"json": {"image": data_url(ocr_line()), "format": "html"}}, 400),
    ("post", "/image-64", lambda: {"json": {"image": data_url(face(), "image/jpeg")}}, 200),
    ("post", "/image-64", lambda: raw(face(), "image/jpeg"), 200),
    ("post", "/image-bin", lambda: raw(face(), "image/jpeg"), 200),
    ("post", "/image-bin?detect=0", lambda: upload_form(face(), "image"), 200),
    ("post", "/api/track", lambda: raw(face(), "image/jpeg"), 200),
    ("post", "/api/track", lambda: {"json": {"image": data_url(face()), "detect": "maybe"}}, 400),
    ("get", "/api/track/stats", dict, 200),
    ("post", "/images", lambda: upload_form(circle(), model="numbers", label="7"), 201),
    ("post", "/images", lambda: upload_form(b""), 400),
    ("get", "/images?per_page=5", dict, 200),
    ("get", "/images?labelled=maybe", dict, 400),
    ("get", "/images/{image_id}", dict, 200),
    ("get", "/images/0123456789abcdef0123456789abcdef", dict, 404),
    ("get", "/vignette/{image_id}", dict, 200),
    ("get", "/images/{image_id}/download", dict, 200),
    ("post", "/images/{image_id}/label", lambda: {"json": {"label": "8"}}, 200),
    ("post", "/images/{image_id}/label", lambda: {"json": {}}, 400),
    ("get", "/images/export?model=numbers", dict, 200),
    ("delete", "/images/{image_id}", dict, 204),
]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """One app with every model and its own store; the threshold is 0 so any digit answers 200."""
    folder = tmp_path_factory.mktemp("openapi")
    with pytest.MonkeyPatch.context() as mp:
        hide_environment(mp)
        app = create_app(
            {
                "LOG_LEVEL": "WARNING",
                "SAVE_IMAGES": False,
                "PREDICT_THRESHOLD": 0,
                "IMAGE_DIR": str(folder / "images"),
                "DATABASE_URL": f"sqlite:///{folder / 'images.db'}",
            }
        )
    yield app
    app.extensions["store"].close()


@pytest.fixture(scope="module")
def spec(app) -> dict:
    document = app.test_client().get("/openapi.json").get_json()
    validate(document)
    return document


def documented_operations(spec: dict) -> set[tuple[str, str]]:
    return {(method, path) for path, item in spec["paths"].items() for method in item if method in METHODS}


def template_of(app, method: str, path: str) -> str:
    """The documented path of the route that answers this request path."""
    rule, _ = app.url_map.bind("localhost").match(path.split("?")[0], method=method.upper(), return_rule=True)
    return FlaskPlugin.flaskpath2openapi(rule.rule)


def resolve(spec: dict, item: dict) -> dict:
    """Follow a $ref to its component (a description beside it overrides the component's)."""
    if "$ref" not in item:
        return item
    section, name = item["$ref"].split("/")[-2:]
    return {**spec["components"][section][name], **{k: v for k, v in item.items() if k != "$ref"}}


def test_every_documented_operation_is_called(app, spec):
    """The table lists every operation the document has, and nothing else."""
    called = {
        (method, template_of(app, method, path.replace("{image_id}", "0" * 32))) for method, path, *_ in CASES
    }
    assert called == documented_operations(spec)


@pytest.mark.parametrize(
    ("method", "path", "arguments", "status"),
    [pytest.param(*case, id=f"{case[0].upper()} {case[1]} {case[3]}") for case in CASES],
)
def test_answers_match_the_document(app, spec, method, path, arguments, status):
    client = app.test_client()
    if "{image_id}" in path:
        created = client.post("/images", **upload_form(circle(), model="numbers"))
        path = path.format(image_id=created.get_json()["id"])
    response = client.open(path, method=method.upper(), **arguments())
    deadline = time.monotonic() + 20
    while path.startswith("/vignette/") and response.status_code == 202 and time.monotonic() < deadline:
        # 202 (documented) until the background thumbnail is made; the 200 is what is checked.
        check_against_document(spec, app, method, path, response)
        time.sleep(0.05)
        response = client.open(path, method=method.upper())
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    check_against_document(spec, app, method, path, response)


def check_against_document(spec: dict, app, method: str, path: str, response) -> None:
    """Check that the answer's status, media type and body are the documented ones."""
    status = response.status_code
    operation = spec["paths"][template_of(app, method, path)][method]
    documented = operation["responses"].get(str(status))
    assert documented is not None, f"{method.upper()} {path} answers {status}, which is not documented"
    content = resolve(spec, documented).get("content")
    if not content:
        assert not response.data, "an answer without a documented body has none"
        return
    media = next(
        (
            m
            for m in content
            if m == response.mimetype or (m.endswith("/*") and response.mimetype.startswith(m[:-1]))
        ),
        None,
    )
    assert media, f"{response.mimetype} is not among the documented {sorted(content)}"
    schema = content[media].get("schema")
    if media == "application/json" and schema:
        # The schema's references point into the document's components: keep them beside it.
        validator = Draft202012Validator({**schema, "components": spec["components"]})
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(response.get_json())]
        assert errors == []


def test_app_and_document_build_under_python_oo(tmp_path):
    """python -OO drops docstrings: nothing may depend on them to start."""
    code = (
        "from app import create_app\n"
        "app = create_app({'SAVE_IMAGES': False, 'LOG_LEVEL': 'ERROR', 'MODELS': {}, 'CLASSIFIER_DIRS': [],"
        f" 'DATABASE_URL': 'sqlite:///{tmp_path / 'db.sqlite'}', 'IMAGE_DIR': '{tmp_path / 'images'}'}})\n"
        "r = app.test_client().get('/openapi.json')\n"
        "assert r.status_code == 200 and r.get_json()['openapi'].startswith('3.'), r.status_code\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("VISION_")}
    env.pop("DATABASE_URL", None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # no .opt-2.pyc files in the checkout
    done = subprocess.run(
        [sys.executable, "-OO", "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def patterns_in(node: Any) -> list[str]:
    """Every `pattern` of a schema in the document."""
    if isinstance(node, dict):
        own = [node["pattern"]] if isinstance(node.get("pattern"), str) else []
        return own + [p for key, value in node.items() if key != "pattern" for p in patterns_in(value)]
    if isinstance(node, list):
        return [p for value in node for p in patterns_in(value)]
    return []


def test_every_pattern_is_one_a_validator_can_read(spec):
    """A pattern a validator cannot compile is dropped by schemathesis without a word."""
    import jsonschema_rs

    patterns = patterns_in(spec)
    assert len(patterns) >= 5
    for pattern in set(patterns):
        jsonschema_rs.validator_for({"type": "string", "pattern": pattern})  # raises when unreadable


def test_image_routes_document_their_request_body(spec):
    """Every route that reads an image says how it is sent (the reference was once lost on the way)."""
    for path in ("/api/predict", "/api/classifier", "/api/ocr", "/api/track", "/image-64", "/images"):
        body = spec["paths"][path]["post"].get("requestBody", {})
        assert body.get("$ref", "").startswith("#/components/requestBodies/"), path
    assert {"Image", "Upload"} <= set(spec["components"]["requestBodies"])


def test_shared_operations_are_filled_in(spec):
    """A route naming a shared operation (`x-operation`) gets its keys; its own come on top."""
    assert "x-operation" not in str(spec["paths"])
    track = {path: spec["paths"][path]["post"] for path in ("/image-64", "/image-bin", "/api/track")}
    assert len({str(op["responses"]) for op in track.values()}) == 1
    assert {op["summary"] for op in track.values()} == {
        "Nose tip in a base64 image (original route)",
        "Nose tip in an uploaded image (original route)",
        "Nose tip of every face in an image",
    }
    default, named = spec["paths"]["/api/classifier"]["post"], spec["paths"]["/api/classifier/{name}"]["post"]
    assert set(named["responses"]) - set(default["responses"]) == {"404"}
    assert list(named["responses"]) == sorted(named["responses"])
