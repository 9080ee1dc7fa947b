"""Saving what the models receive, the /gallery page and the gallery's API description."""

from __future__ import annotations

import errno

import cv2
import numpy as np
import pytest
from apispec import APISpec

from blueprints.image_input import keep_image
from models.image import InputImage
from store import ImageStore
from tests.blueprints.gallery_support import (
    build_app,
    failures,
    store_of,
    upload,
)
from tests.conftest import data_url, png_bytes

# --- saving what the models receive ---------------------------------------------------------


def test_keep_image_saves_in_the_background_with_the_prediction(gallery_app):
    image = InputImage(pixels=np.full((28, 28), 255, np.uint8), format="ARRAY", source="legacy_array")
    with gallery_app.test_request_context("/api/predict", method="POST"):
        keep_image(image, endpoint="predict", model="numbers", prediction="7", confidence=0.97)
    store = gallery_app.extensions["store"]
    assert store.flush(10)
    items, total = store.list()
    assert total == 1
    record = items[0]
    assert (record.endpoint, record.model, record.prediction, record.confidence) == (
        "predict",
        "numbers",
        "7",
        0.97,
    )
    assert (record.format, record.width, record.height) == ("PNG", 28, 28)


def test_keep_image_does_nothing_when_saving_is_off(monkeypatch, tmp_path):
    app = build_app(monkeypatch, tmp_path, SAVE_IMAGES=False)
    image = InputImage(pixels=np.zeros((4, 4), np.uint8), format="ARRAY", source="legacy_array")
    with app.test_request_context("/api/predict", method="POST"):
        keep_image(image, endpoint="predict", model="numbers", prediction="1", confidence=0.5)
    store = app.extensions["store"]
    assert store.flush(5) and store.list()[1] == 0
    store.close()


def test_a_full_disk_never_fails_the_prediction(gallery, monkeypatch):
    if "numbers" not in gallery.application.extensions["registry"].models:
        pytest.skip("the numbers model is not loaded, so /api/predict cannot run")

    def no_space(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ImageStore, "_write_file", staticmethod(no_space))
    before = failures("disk")
    canvas = np.full((280, 280), 255, np.uint8)
    cv2.polylines(canvas, [np.array([[70, 50], [210, 50], [130, 230]], np.int32)], False, 0, 18, cv2.LINE_AA)
    r = gallery.post("/api/predict", json={"image": data_url(png_bytes(canvas))})
    assert r.status_code in (200, 422)
    assert "prediction" in r.get_json()
    store = store_of(gallery)
    assert store.flush(10)
    assert failures("disk") == before + 1
    assert store.list()[1] == 0
    monkeypatch.undo()
    r = gallery.post("/api/predict", json={"image": data_url(png_bytes(canvas))})
    assert store.flush(10)
    items, total = store.list()
    assert (
        total == 1 and items[0].model == "numbers" and items[0].prediction == str(r.get_json()["prediction"])
    )


# --- the page and the API description -------------------------------------------------------


def test_gallery_page_renders_with_local_assets(gallery):
    upload(gallery, model="numbers")
    r = gallery.get("/gallery")
    assert r.status_code == 200 and r.mimetype == "text/html"
    page = r.get_data(as_text=True)
    assert 'id="gallery-grid"' in page and "js/gallery.js" in page and "css/gallery.css" in page
    assert '<option value="numbers">numbers</option>' in page
    assert "http://" not in page.replace("http://www.w3.org", "") and "https://" not in page
    assert gallery.get("/static/js/gallery.js").status_code == 200


def test_openapi_describes_the_gallery(gallery_app):
    from apispec.yaml_utils import load_operations_from_docstring

    from blueprints import gallery as module
    from blueprints.openapi import add_schema

    documented = {}
    for rule in gallery_app.url_map.iter_rules():
        if rule.endpoint.startswith("gallery.") and rule.endpoint != "gallery.gallery_page":
            operations = load_operations_from_docstring(gallery_app.view_functions[rule.endpoint].__doc__)
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                path = rule.rule.replace("<image_id:image_id>", "<image_id>")  # the id converter
                documented[(path, method.lower())] = operations[method.lower()]
    assert set(documented) == {
        ("/images", "post"),
        ("/images", "get"),
        ("/images/<image_id>", "get"),
        ("/images/<image_id>", "delete"),
        ("/images/<image_id>/download", "get"),
        ("/images/<image_id>/label", "post"),
        ("/images/export", "get"),
        ("/vignette/<image_id>", "get"),
    }
    assert all(op["summary"] and op["responses"] for op in documented.values())
    assert set(documented[("/images", "post")]["responses"]) == {201, 400, 401, 403, 413, 415, 503}
    for guarded in (
        ("/images/<image_id>", "delete"),
        ("/images/<image_id>/label", "post"),
        ("/images/export", "get"),
    ):
        assert {401, 403} <= set(documented[guarded]["responses"]), guarded
    assert 202 in documented[("/vignette/<image_id>", "get")]["responses"]
    spec = APISpec(title="t", version="1", openapi_version="3.0.3")
    for model in module.SCHEMAS:
        add_schema(spec, model)
    assert {"ImageCreated", "ImageMeta", "ImagePage", "ThumbnailPending", "LabelRequest"} <= set(
        spec.to_dict()["components"]["schemas"]
    )
