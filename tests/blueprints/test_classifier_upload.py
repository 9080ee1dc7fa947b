"""Teachable Machine models added and removed through the API, served by every worker without a restart.

Two apps on the same classifier folders stand in for two workers (a real 2-worker gunicorn:
test_classifier_workers.py). Hostile zips: tests/hostile/test_teachable_upload.py.
"""

from __future__ import annotations

import io
import json
import os
import time
import zipfile
from pathlib import Path

import pytest

from app import create_app
from tests.conftest import hide_environment

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "teachable"
# Each format as Teachable Machine's "Download my model" zips it: (fixture folder, files).
EXPORTS = {
    "keras_h5": ("flask-mug", ("keras_model.h5", "labels.txt")),
    "tfjs": ("snackbars-tfjs", ("model.json", "weights.bin", "metadata.json")),
    "tflite": ("fruit-tflite", ("model_unquant.tflite", "labels.txt")),
    "tflite_quantized": ("fruit-tflite", ("model.tflite", "labels.txt")),
}
LABELS = {
    "keras_h5": ["Flask", "Mug"],
    "tfjs": ["Snickers", "Mars", "Rood"],
    "tflite": 6,
    "tflite_quantized": 6,
}


def export_zip(fmt: str, *, extra: dict[str, bytes] | None = None, drop: tuple[str, ...] = ()) -> bytes:
    """Zip a committed export as Teachable Machine does (files at the top, deflated)."""
    folder, files = EXPORTS[fmt]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in files:
            if name not in drop:
                archive.write(DATA / folder / name, name)
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return buf.getvalue()


def upload(client, name: str, data: bytes, **headers: str):
    """POST a zip to the upload route as the page does (multipart: name + file)."""
    return client.post(
        "/api/classifier/models",
        data={"name": name, "file": (io.BytesIO(data), "converted_model.zip")},
        content_type="multipart/form-data",
        headers=headers,
    )


def image() -> bytes:
    return (DATA / "images" / "red.png").read_bytes()


@pytest.fixture
def folders(tmp_path) -> list[Path]:
    """An empty classifier folder for uploads, then one with a model dropped in by hand."""
    by_hand = tmp_path / "by-hand"
    (by_hand / "mug").mkdir(parents=True)
    for name in ("keras_model.h5", "keras_model.onnx", "keras_model.onnx.json", "labels.txt"):
        (by_hand / "mug" / name).write_bytes((DATA / "flask-mug" / name).read_bytes())
    return [tmp_path / "uploads", by_hand]


@pytest.fixture
def make_app(base_app_config, folders, monkeypatch):
    """Build an app (a worker) on the shared classifier folders."""
    hide_environment(monkeypatch)

    def make(**config):
        return create_app({**base_app_config, "CLASSIFIER_DIRS": [str(f) for f in folders], **config})

    return make


def names(client) -> dict[str, dict]:
    return {row["name"]: row for row in client.get("/api/classifier/models").get_json()["models"]}


def leftovers(folder: Path) -> list[str]:
    """What a folder holds besides its generation file."""
    return sorted(p.name for p in folder.iterdir() if p.name != ".generation") if folder.exists() else []


@pytest.mark.parametrize("fmt", list(EXPORTS))
def test_a_zip_in_each_format_is_served_by_every_worker_and_removed(make_app, folders, fmt):
    one, two = make_app().test_client(), make_app().test_client()
    assert "new" not in names(two)
    r = upload(one, "new", export_zip(fmt))
    assert r.status_code == 201, r.get_json()
    row = r.get_json()
    assert r.headers["Location"] == "/api/classifier/new" == row["url"]
    assert row["format"] == fmt and row["loaded"] and row["removable"] and row["kind"] == "teachable"
    expected = LABELS[fmt]
    assert row["labels"] == expected if isinstance(expected, list) else len(row["labels"]) == expected
    # The other worker serves it from its next classifier request, without a restart.
    answer = two.post("/api/classifier/new?top=10", data=image(), content_type="image/png")
    assert answer.status_code == 200, answer.get_json()
    assert {t["label"] for t in answer.get_json()["top"]} == set(row["labels"])
    assert names(two)["new"]["removable"] and "new" in two.get("/classify").get_data(as_text=True)
    # Kept as the export, its ONNX cache and the upload record; served again after a restart.
    kept = leftovers(folders[0] / "new")
    assert "upload.json" in kept and any(n.endswith(".onnx") for n in kept)
    record = json.loads((folders[0] / "new" / "upload.json").read_text())
    assert record["format"] == fmt and record["labels"] == row["labels"]
    restarted = make_app().test_client()
    assert restarted.post("/api/classifier/new", data=image(), content_type="image/png").get_json() == {
        **answer.get_json(),
        "top": answer.get_json()["top"][:3],
    }
    # Removed through either worker: no worker serves it any more, and nothing is left.
    assert two.delete("/api/classifier/models/new").status_code == 204
    for client in (one, two, restarted):
        gone = client.post("/api/classifier/new", data=image(), content_type="image/png")
        assert gone.status_code == 404 and gone.get_json()["code"] == "unknown_model"
    assert leftovers(folders[0]) == []
    assert one.delete("/api/classifier/models/new").status_code == 404


def test_an_upload_is_seen_while_the_other_worker_keeps_its_unchanged_models(make_app):
    one, two = make_app(), make_app()
    before = two.extensions["registry"]
    assert upload(one.test_client(), "snacks", export_zip("tfjs")).status_code == 201
    assert two.extensions["registry"] is before  # nothing is reloaded until a classifier request
    assert two.test_client().get("/api/classifier/snacks").status_code == 400  # the GET hint: known
    after = two.extensions["registry"]
    assert after is not before and after.models["doodles"] is before.models["doodles"]
    assert after.models["mug"] is before.models["mug"] and "snacks" in after.models
    assert not before.models.keys() & {"snacks"}  # the old registry was not mutated


@pytest.mark.parametrize(
    ("name", "status", "code"),
    [
        ("", 400, "invalid_name"),
        ("Has Space", 400, "invalid_name"),
        ("UPPER", 400, "invalid_name"),
        ("../up", 400, "invalid_name"),
        ("-dash", 400, "invalid_name"),
        ("x" * 49, 400, "invalid_name"),
        ("doodles", 409, "model_exists"),  # a configured model
        ("numbers", 409, "model_exists"),  # configured, though no classifier
        ("mug", 409, "model_exists"),  # dropped in another classifier folder
        ("models", 409, "model_exists"),  # the listing route
    ],
)
def test_names_must_be_new_safe_slugs(make_app, folders, name, status, code):
    client = make_app().test_client()
    r = upload(client, name, export_zip("tflite_quantized"))
    assert (r.status_code, r.get_json()["code"]) == (status, code), r.get_json()
    assert leftovers(folders[0]) == []


def test_a_taken_name_is_refused_and_the_first_model_kept(make_app, folders):
    client = make_app().test_client()
    assert upload(client, "fruit", export_zip("tflite_quantized")).status_code == 201
    r = upload(make_app().test_client(), "fruit", export_zip("tfjs"))
    assert (r.status_code, r.get_json()["code"]) == (409, "model_exists")
    assert names(client)["fruit"]["format"] == "tflite_quantized"
    assert leftovers(folders[0]) == ["fruit"]


def test_the_upload_needs_a_zip(make_app):
    client = make_app().test_client()
    r = client.post("/api/classifier/models", data={"name": "x"}, content_type="multipart/form-data")
    assert (r.status_code, r.get_json()["code"]) == (400, "missing_file")
    r = client.post("/api/classifier/models", json={"name": "x"})
    assert (r.status_code, r.get_json()["code"]) == (400, "missing_file")


def test_only_models_added_through_the_api_are_removed(make_app, folders):
    client = make_app().test_client()
    for name in ("doodles", "mug"):
        r = client.delete(f"/api/classifier/models/{name}")
        assert (r.status_code, r.get_json()["code"]) == (409, "not_removable")
    assert (folders[1] / "mug" / "keras_model.h5").is_file()
    r = client.delete("/api/classifier/models/nothing")
    assert (r.status_code, r.get_json()["code"]) == (404, "unknown_model")


def test_without_classifier_folders_nothing_can_be_added(make_app):
    client = make_app(CLASSIFIER_DIRS=[]).test_client()
    r = upload(client, "x", export_zip("tfjs"))
    assert (r.status_code, r.get_json()["code"]) == (409, "no_classifier_folder")


def test_adding_and_removing_need_the_admin(make_app, folders):
    client = make_app(ADMIN_TOKEN="s3cret-token-for-tests").test_client()
    data = export_zip("tflite_quantized")
    r = upload(client, "fruit", data)
    assert (r.status_code, r.get_json()["code"]) == (401, "credentials_required")
    r = upload(client, "fruit", data, Authorization="Bearer wrong")
    assert (r.status_code, r.get_json()["code"]) == (401, "invalid_credentials")
    assert leftovers(folders[0]) == []
    assert upload(client, "fruit", data, Authorization="Bearer s3cret-token-for-tests").status_code == 201
    assert client.delete("/api/classifier/models/fruit").status_code == 401
    ok = client.delete(
        "/api/classifier/models/fruit", headers={"Authorization": "Bearer s3cret-token-for-tests"}
    )
    assert ok.status_code == 204
    # No token set: only this machine.
    remote = make_app().test_client()
    r = remote.post(
        "/api/classifier/models",
        data={"name": "fruit", "file": (io.BytesIO(data), "m.zip")},
        environ_base={"REMOTE_ADDR": "192.0.2.7"},
    )
    assert (r.status_code, r.get_json()["code"]) == (403, "admin_only")
    r = remote.delete("/api/classifier/models/mug", environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert r.status_code == 403


def test_what_a_dead_worker_left_is_swept_by_the_next_upload(make_app, folders):
    client = make_app().test_client()
    assert upload(client, "first", export_zip("tflite_quantized")).status_code == 201
    old, fresh, trash = folders[0] / ".upload-old", folders[0] / ".upload-now", folders[0] / ".removed-x"
    for folder in (old, fresh, trash):
        folder.mkdir()
        (folder / "model.tflite").write_bytes(b"half")
    hour_ago = time.time() - 2 * 3600
    os.utime(old, (hour_ago, hour_ago))
    assert names(client).keys() >= {"first"} and not names(client).keys() & {".upload-old", "upload-old"}
    assert upload(client, "second", export_zip("tflite_quantized")).status_code == 201
    # An upload still in progress elsewhere (a fresh folder) is left alone.
    assert leftovers(folders[0]) == [".upload-now", "first", "second"]


def test_a_folder_dropped_in_is_served_after_a_restart_or_a_touch(make_app, folders):
    app = make_app()
    client = app.test_client()
    dropped = folders[0] / "dropped"
    dropped.mkdir(parents=True)
    for name in EXPORTS["tflite_quantized"][1]:
        (dropped / name).write_bytes((DATA / "fruit-tflite" / name).read_bytes())
    assert "dropped" not in names(client)
    assert "dropped" in names(make_app().test_client())  # a restart
    (folders[0] / ".generation").touch()
    assert names(client)["dropped"]["loaded"] and not names(client)["dropped"]["removable"]


@pytest.mark.parametrize("path", ["/ready", "/models"])
def test_readiness_and_the_models_page_see_an_upload_made_through_another_worker(make_app, path):
    one, two = make_app().test_client(), make_app().test_client()
    two.get(path)
    assert upload(one, "snacks", export_zip("tfjs")).status_code == 201
    page = two.get(path)
    assert page.status_code == 200
    assert "snacks" in page.get_data(as_text=True)
