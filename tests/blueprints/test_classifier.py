"""The classifier API (/api/classifier[/<name>], /api/classifier/models) and its pages."""

from __future__ import annotations

import base64
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from app import create_app
from models.runtime import LabelMismatchError
from tests.conftest import data_url, hide_environment, png_bytes

TEACHABLE = Path(__file__).parents[1] / "data" / "teachable" / "flask-mug"
HINT = {"label": None, "msg": "POST a base64-encoded drawing as base64_drawing."}


def circle(mode: str = "RGB", size: int = 256) -> np.ndarray:
    """The Teachable fixture's reference drawing: a black circle outline, on white or transparent."""
    background = (255, 255, 255) if mode == "RGB" else (0, 0, 0, 0)
    img = Image.new(mode, (size, size), background)
    ImageDraw.Draw(img).ellipse(
        (40, 40, 216, 216), outline=(0, 0, 0) + (() if mode == "RGB" else (255,)), width=12
    )
    return np.asarray(img)


def copy_export(dest: Path, labels: str | None = None) -> Path:
    """Copy the Teachable fixture (with its ONNX cache) into a classifiers folder."""
    dest.mkdir(parents=True)
    for name in ("keras_model.h5", "keras_model.onnx", "keras_model.onnx.json", "labels.txt"):
        shutil.copyfile(TEACHABLE / name, dest / name)
    if labels is not None:
        (dest / "labels.txt").write_text(labels, encoding="utf-8")
    return dest


@pytest.fixture(scope="module")
def teachable_app(base_app_config, tmp_path_factory):
    """An app serving only the committed Teachable fixture, as the default classifier (built once)."""
    folder = tmp_path_factory.mktemp("classifiers")
    copy_export(folder / "flask-mug")
    with pytest.MonkeyPatch.context() as mp:
        hide_environment(mp)
        return create_app(
            {
                **base_app_config,
                "MODELS": {},
                "CLASSIFIER_DIRS": [str(folder)],
                "DEFAULT_CLASSIFIER": "flask-mug",
                "MAX_IMAGE_PIXELS": 4_000_000,
            }
        )


@pytest.fixture
def tclient(teachable_app):
    return teachable_app.test_client()


# --- GET: the original service's hint ---------------------------------------------------------------


def test_get_answers_400_with_the_original_hint(tclient):
    r = tclient.get("/api/classifier")
    assert r.status_code == 400
    assert r.is_json and HINT.items() <= r.get_json().items()


def test_get_on_a_named_classifier_is_the_same_hint(tclient):
    r = tclient.get("/api/classifier/flask-mug")
    assert r.status_code == 400 and HINT.items() <= r.get_json().items()


# --- predictions -----------------------------------------------------------------------------------


def test_named_teachable_classifier_matches_its_reference(tclient):
    r = tclient.post("/api/classifier/flask-mug", json={"base64_drawing": data_url(png_bytes(circle()))})
    body = r.get_json()
    assert r.status_code == 200, body
    assert body["label"] == "Mug" and body["model"] == "flask-mug"
    assert body["confidence"] == pytest.approx(0.9872, abs=1e-3)
    assert [row["label"] for row in body["top"]] == ["Mug", "Flask"]
    assert body["top"][1]["confidence"] == pytest.approx(0.0128, abs=1e-3)


def test_default_classifier_is_served_at_the_root(tclient):
    body = tclient.post("/api/classifier", json={"base64_drawing": data_url(png_bytes(circle()))}).get_json()
    assert body["model"] == "flask-mug" and body["label"] == "Mug"


def test_transparent_canvas_is_composited_on_white(tclient):
    on_white = tclient.post("/api/classifier", json={"image": data_url(png_bytes(circle()))}).get_json()
    clear = tclient.post("/api/classifier", json={"image": data_url(png_bytes(circle("RGBA")))}).get_json()
    assert clear["confidence"] == pytest.approx(on_white["confidence"], abs=1e-3)


@pytest.mark.parametrize("how", ["image-field", "plain-base64", "multipart", "raw", "jpeg"])
def test_every_image_format_is_accepted(tclient, how):
    png = png_bytes(circle())
    if how == "image-field":
        r = tclient.post("/api/classifier", json={"image": data_url(png)})
    elif how == "plain-base64":
        r = tclient.post("/api/classifier", json={"base64_drawing": base64.b64encode(png).decode()})
    elif how == "multipart":
        r = tclient.post("/api/classifier", data={"image": (io.BytesIO(png), "mug.png"), "top": "1"})
    elif how == "raw":
        r = tclient.post("/api/classifier?top=1", data=png, content_type="image/png")
    else:
        buf = io.BytesIO()
        Image.fromarray(circle()).save(buf, format="JPEG", quality=95)
        r = tclient.post("/api/classifier", json={"image": data_url(buf.getvalue(), "image/jpeg")})
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["label"] == "Mug"
    if how in ("multipart", "raw"):
        assert len(r.get_json()["top"]) == 1


@pytest.mark.parametrize(("top", "count"), [(1, 1), ("2", 2), (50, 2)])
def test_top(tclient, top, count):
    r = tclient.post("/api/classifier", json={"image": data_url(png_bytes(circle())), "top": top})
    assert r.status_code == 200 and len(r.get_json()["top"]) == count


@pytest.mark.parametrize("top", [0, -1, "three", 1.5, True, [2]])
def test_bad_top_is_400(tclient, top):
    r = tclient.post("/api/classifier", json={"image": data_url(png_bytes(circle())), "top": top})
    assert r.status_code == 400 and r.get_json()["code"] == "invalid_top"


def test_the_image_is_kept_with_its_prediction(tclient, monkeypatch):
    kept = []
    monkeypatch.setattr("blueprints.classifier.keep_image", lambda image, **kw: kept.append(kw))
    tclient.post("/api/classifier", json={"base64_drawing": data_url(png_bytes(circle()))})
    (call,) = kept
    assert call["endpoint"] == "classifier" and call["model"] == "flask-mug" and call["prediction"] == "Mug"
    assert call["confidence"] == pytest.approx(0.9872, abs=1e-3)


# --- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["get", "post"])
def test_unknown_model_is_404_json(tclient, method):
    r = getattr(tclient, method)(
        "/api/classifier/no-such-model", json={"image": data_url(png_bytes(circle()))}
    )
    body = r.get_json()
    assert r.status_code == 404
    assert (
        body["code"] == "unknown_model"
        and body["model"] == "no-such-model"
        and body["models"] == ["flask-mug"]
    )


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"data": b"", "content_type": "application/json"}, 400, "empty_body"),
        ({"data": b"{not json", "content_type": "application/json"}, 400, "invalid_json"),
        ({"json": {"picture": "abc"}}, 400, "missing_image"),
        ({"json": {"base64_drawing": ""}}, 400, "missing_image"),
        ({"json": {"base64_drawing": 42}}, 400, "invalid_image_field"),
        ({"json": {"base64_drawing": "data:image/png;base64,@@@"}}, 400, "invalid_base64"),
        ({"json": {"base64_drawing": data_url(b"hello, not an image")}}, 415, "not_an_image"),
        ({"data": b"GIF89a broken", "content_type": "image/gif"}, 415, "not_an_image"),
        (
            {"json": {"base64_drawing": data_url(png_bytes(np.zeros((3000, 3000), np.uint8)))}},
            413,
            "image_too_large",
        ),
    ],
    ids=[
        "empty",
        "bad-json",
        "wrong-field",
        "empty-field",
        "number",
        "bad-base64",
        "not-image",
        "bad-gif",
        "huge",
    ],
)
def test_bad_images_are_json_errors(tclient, kwargs, status, code):
    r = tclient.post("/api/classifier/flask-mug", **kwargs)
    body = r.get_json()
    assert (r.status_code, body["code"]) == (status, code), body
    assert body["error"]


def test_default_classifier_not_configured_is_503(base_app_config):
    app = create_app(
        {**base_app_config, "MODELS": {}, "CLASSIFIER_DIRS": [], "DEFAULT_CLASSIFIER": "doodles"}
    )
    r = app.test_client().post("/api/classifier", json={"image": data_url(png_bytes(circle()))})
    assert r.status_code == 503 and r.get_json()["code"] == "model_not_loaded"


def test_a_corrupt_export_is_503_and_the_others_still_serve(base_app_config, tmp_path):
    pytest.importorskip("h5py")
    folder = tmp_path / "classifiers"
    copy_export(folder / "flask-mug")
    broken = copy_export(folder / "broken")
    (broken / "keras_model.onnx").unlink()
    (broken / "keras_model.h5").write_bytes(b"not a Keras file")
    app = create_app({**base_app_config, "MODELS": {}, "CLASSIFIER_DIRS": [str(folder)]})
    client = app.test_client()
    r = client.post("/api/classifier/broken", json={"image": data_url(png_bytes(circle()))})
    assert r.status_code == 503 and "corrupt" in r.get_json()["error"]
    assert (
        client.post("/api/classifier/flask-mug", json={"image": data_url(png_bytes(circle()))}).status_code
        == 200
    )
    rows = {m["name"]: m for m in client.get("/api/classifier/models").get_json()["models"]}
    assert rows["broken"]["loaded"] is False and "corrupt" in rows["broken"]["error"]


def test_app_refuses_to_start_when_labels_do_not_fit_the_model(base_app_config, tmp_path):
    copy_export(tmp_path / "classifiers" / "mug", labels="0 Flask\n1 Mug\n2 Bottle\n")
    config = {**base_app_config, "MODELS": {}, "CLASSIFIER_DIRS": [str(tmp_path / "classifiers")]}
    with pytest.raises(LabelMismatchError) as info:
        create_app(config)
    assert "labels.txt" in str(info.value) and "keras_model.h5" in str(info.value)


# --- the list of classifiers ----------------------------------------------------------------------


def test_models_lists_every_classifier_with_labels(client, app):
    body = client.get("/api/classifier/models").get_json()
    assert body["default"] == app.config["DEFAULT_CLASSIFIER"]
    rows = {m["name"]: m for m in body["models"]}
    mug = rows["flask-mug"]
    assert mug["kind"] == "teachable" and mug["loaded"] is True and mug["labels"] == ["Flask", "Mug"]
    assert mug["url"] == "/api/classifier/flask-mug" and mug["input_mode"] == "rgb"
    assert "numbers" not in rows  # only classifiers are listed
    assert (
        app.config["DEFAULT_CLASSIFIER"] in rows and rows[app.config["DEFAULT_CLASSIFIER"]]["default"] is True
    )


def test_a_classifier_given_by_path_in_config_needs_no_code(base_app_config, tmp_path):
    export = copy_export(tmp_path / "anywhere" / "export")
    spec = {"type": "teachable", "path": str(export / "keras_model.h5"), "labels": str(export / "labels.txt")}
    app = create_app({**base_app_config, "MODELS": {"cups": spec}, "CLASSIFIER_DIRS": []})
    r = app.test_client().post("/api/classifier/cups", json={"image": data_url(png_bytes(circle()))})
    assert r.status_code == 200 and r.get_json()["label"] == "Mug"


def test_openapi_documents_the_classifier(tclient):
    paths = tclient.get("/openapi.json").get_json()["paths"]
    assert {"get", "post"} <= set(paths["/api/classifier"]) and "post" in paths["/api/classifier/{name}"]
    assert "get" in paths["/api/classifier/models"]


# --- pages -------------------------------------------------------------------------------------------


def test_classify_page_lists_the_classifiers(tclient):
    r = tclient.get("/classify")
    html = r.get_data(as_text=True)
    assert r.status_code == 200 and r.mimetype == "text/html"
    assert 'value="flask-mug"' in html and 'data-labels="Flask, Mug"' in html
    assert "/static/js/classify.js" in html and "cdn" not in html.lower()


def test_doodle_page_uses_the_drawpad(client):
    r = client.get("/doodle")
    html = r.get_data(as_text=True)
    assert r.status_code == 200 and r.mimetype == "text/html"
    assert "/static/js/drawpad.js" in html and "/static/js/doodle.js" in html
    assert 'id="doodle-clear"' in html and 'data-model="' in html


def test_doodle_page_names_a_doodle_model_with_its_labels(tclient):
    # Without a doodle model the page falls back to DEFAULT_CLASSIFIER.
    html = tclient.get("/doodle").get_data(as_text=True)
    assert 'data-model="flask-mug"' in html and "Flask, Mug" in html


# --- the doodle model through HTTP, on committed held-out drawings --------------------------------

DOODLES = Path(__file__).parents[1] / "data" / "doodles"
# Measured through this API on the 360 canvas PNGs: top-1 0.900, top-3 0.967 (doodles.onnx of
# 2026-12-04, held-out top-1 0.915 on bitmaps); the floors sit a little under.
DOODLE_TOP1_FLOOR = 0.885
DOODLE_TOP3_FLOOR = 0.955


@pytest.mark.slow  # 360 requests: ~5 s of CPU, more on a busy machine
def test_doodle_accuracy_floor_through_the_api(client, app):
    import csv

    if app.extensions["registry"].models.get(app.config["DEFAULT_CLASSIFIER"]) is None:
        pytest.fail(f"the default classifier did not load: {app.extensions['registry'].failures}")
    with open(DOODLES / "labels.csv", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) >= 300
    hits = {"top1": 0, "top3": 0}
    by_background: dict[str, list[bool]] = {}
    for row in rows:
        drawing = data_url((DOODLES / row["file"]).read_bytes())
        r = client.post("/api/classifier", json={"base64_drawing": drawing})
        body = r.get_json()
        assert r.status_code == 200, (row["file"], body)
        hits["top1"] += body["label"] == row["label"]
        hits["top3"] += row["label"] in [t["label"] for t in body["top"]]
        by_background.setdefault(row["background"], []).append(body["label"] == row["label"])
    top1, top3 = hits["top1"] / len(rows), hits["top3"] / len(rows)
    assert top1 >= DOODLE_TOP1_FLOOR, f"top-1 {top1:.3f} under {DOODLE_TOP1_FLOOR}"
    assert top3 >= DOODLE_TOP3_FLOOR, f"top-3 {top3:.3f} under {DOODLE_TOP3_FLOOR}"
    # A transparent canvas must do as well as a white one: it is composited on white first.
    rates = {bg: sum(v) / len(v) for bg, v in by_background.items()}
    assert max(rates.values()) - min(rates.values()) < 0.1, rates
