"""Who may change what: every route that changes or removes stored data, and the bulk export, needs the admin.

The guarded routes are found in the app's url_map, not listed by hand: every POST, PUT, PATCH and
DELETE except the model routes (whose keeping of each image is the documented SAVE_IMAGES
behaviour) and the plain upload (it adds one image, as a prediction does; a label on it needs the
admin), plus the export. A route added later is guarded by this test without a line here.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from flask import url_for

import blueprints.auth
from app import create_app
from tests.conftest import hide_environment, png_bytes

TOKEN = "s3cret-admin-token-0123456789"
REMOTE = {"REMOTE_ADDR": "203.0.113.7"}
# Routes whose POST keeps the image it reads (SAVE_IMAGES), a documented behaviour, not a change.
MODEL_ROUTES = {
    "numbers.predict",
    "classifier.predict_default",
    "classifier.predict_named",
    "ocr.predict",
    "tracking.image_64",
    "tracking.image_bin",
    "tracking.track_any",
}
OPEN_WRITES = {"gallery.upload"}
BULK_READS = {("GET", "gallery.export")}
READS = ["/images", "/images/{id}", "/images/{id}/download", "/vignette/{id}", "/gallery"]


def make_app(tmp_path, monkeypatch, **overrides):
    """An app with its own store and no models (they play no part here)."""
    hide_environment(monkeypatch)
    config = {
        "SAVE_IMAGES": False,
        "LOG_LEVEL": "WARNING",
        "IMAGE_DIR": str(tmp_path / "images"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'images.db'}",
        "MODELS": {},
        "CLASSIFIER_DIRS": [],
        **overrides,
    }
    return create_app(config)


def stored_id(app) -> str:
    """Upload one image from loopback (no label: open to all) and return its id."""
    form = {"file": (io.BytesIO(png_bytes(np.full((8, 8), 200, "uint8"))), "a.png")}
    response = app.test_client().post("/images", data=form, content_type="multipart/form-data")
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def guarded(app) -> list[tuple[str, str]]:
    """(method, endpoint) of every route that needs the admin, from the url_map."""
    found = set(BULK_READS)
    for rule in app.url_map.iter_rules():
        if rule.endpoint in MODEL_ROUTES | OPEN_WRITES:
            continue
        for method in (rule.methods or set()) & {"POST", "PUT", "PATCH", "DELETE"}:
            found.add((method, rule.endpoint))
    return sorted(found)


def url(app, endpoint: str, image_id: str) -> str:
    """Build a route's URL, an existing image id for <image_id> and 'x' for any other argument."""
    rule = next(r for r in app.url_map.iter_rules() if r.endpoint == endpoint)
    args = {arg: image_id if arg == "image_id" else "x" for arg in rule.arguments}
    with app.test_request_context():
        return url_for(endpoint, **args)


def call(app, method: str, endpoint: str, image_id: str, **kwargs):
    """Send a request to a route with a body that would do something (a label)."""
    kwargs.setdefault("json", {"label": "7"} if method != "DELETE" and method != "GET" else None)
    if kwargs["json"] is None:
        kwargs.pop("json")
    return app.test_client().open(url(app, endpoint, image_id), method=method, **kwargs)


@pytest.fixture
def open_app(tmp_path, monkeypatch):
    """No ADMIN_TOKEN: only loopback clients are the admin."""
    return make_app(tmp_path, monkeypatch)


@pytest.fixture
def token_app(tmp_path, monkeypatch):
    """ADMIN_TOKEN set: only requests that carry it are the admin."""
    return make_app(tmp_path, monkeypatch, ADMIN_TOKEN=TOKEN)


def test_the_guarded_routes_include_delete_label_and_export(open_app):
    routes = guarded(open_app)
    assert ("DELETE", "gallery.delete_image") in routes
    assert ("POST", "gallery.set_label") in routes
    assert ("GET", "gallery.export") in routes


def test_without_a_token_a_remote_client_may_change_nothing(open_app):
    image_id = stored_id(open_app)
    for method, endpoint in guarded(open_app):
        response = call(open_app, method, endpoint, image_id, environ_base=REMOTE)
        assert response.status_code == 403, (method, endpoint, response.status_code)
        body = response.get_json()
        assert body["code"] == "admin_only" and "ADMIN_TOKEN" in body["error"], (method, endpoint)
    meta = open_app.test_client().get(f"/images/{image_id}").get_json()
    assert meta["label"] is None  # nothing changed: still there, still unlabelled


def test_without_a_token_a_local_proxy_is_not_the_admin(open_app):
    """nginx on this machine connects from loopback: with TRUSTED_PROXIES 0 its clients are unknown."""
    image_id = stored_id(open_app)
    for headers in ({"X-Forwarded-For": "203.0.113.7"}, {"Forwarded": "for=203.0.113.7"}):
        response = open_app.test_client().delete(f"/images/{image_id}", headers=headers)
        assert response.status_code == 403, headers
    assert open_app.test_client().get(f"/images/{image_id}").status_code == 200


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "127.8.9.10", "::ffff:127.0.0.1"])
def test_without_a_token_loopback_clients_are_the_admin(open_app, address):
    image_id = stored_id(open_app)
    client = open_app.test_client()
    base = {"REMOTE_ADDR": address}
    assert client.post(f"/images/{image_id}/label", json={"label": "3"}, environ_base=base).status_code == 200
    export = client.get("/images/export", environ_base=base)
    assert export.status_code == 200 and export.headers["X-Image-Count"] == "1"
    assert client.delete(f"/images/{image_id}", environ_base=base).status_code == 204


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        f"Basic {TOKEN}",
        f"Bearer {TOKEN[:-1]}",
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN.upper()}",
        "Bearer \u00e9\u00e9\u00e9",
    ],
)
def test_with_a_token_every_guarded_route_needs_it(token_app, authorization):
    image_id = stored_id_with_token(token_app)
    headers = {} if authorization is None else {"Authorization": authorization}
    for method, endpoint in guarded(token_app):
        # Loopback too: once a token is set, where the request comes from does not matter.
        for environ in ({}, REMOTE):
            response = call(token_app, method, endpoint, image_id, headers=headers, environ_base=environ)
            assert response.status_code == 401, (method, endpoint, authorization, response.status_code)
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            assert response.get_json()["code"] in ("credentials_required", "invalid_credentials")
            assert TOKEN not in response.get_data(as_text=True)
    meta = token_app.test_client().get(f"/images/{image_id}").get_json()
    assert meta["label"] is None


def stored_id_with_token(app) -> str:
    """Upload one image (a plain upload needs no token) and return its id."""
    form = {"file": (io.BytesIO(png_bytes(np.full((8, 8), 90, "uint8"))), "b.png")}
    response = app.test_client().post(
        "/images", data=form, content_type="multipart/form-data", environ_base=REMOTE
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def test_with_the_token_a_remote_client_may_change_and_export(token_app, monkeypatch):
    compared = []
    real = blueprints.auth.hmac.compare_digest
    monkeypatch.setattr(blueprints.auth.hmac, "compare_digest", lambda a, b: compared.append(1) or real(a, b))
    image_id = stored_id_with_token(token_app)
    client = token_app.test_client()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    labelled = client.post(
        f"/images/{image_id}/label", json={"label": "4"}, headers=auth, environ_base=REMOTE
    )
    assert labelled.status_code == 200 and labelled.get_json()["label"] == "4"
    export = client.get("/images/export", headers={"Authorization": f"bearer  {TOKEN}"}, environ_base=REMOTE)
    assert export.status_code == 200 and export.headers["X-Image-Count"] == "1"
    assert client.delete(f"/images/{image_id}", headers=auth, environ_base=REMOTE).status_code == 204
    assert compared, "the token must be compared with hmac.compare_digest (constant time)"


def test_an_upload_with_a_label_needs_the_admin(token_app):
    client = token_app.test_client()

    def send(**kwargs):
        form = {"file": (io.BytesIO(png_bytes(np.full((8, 8), 10, "uint8"))), "c.png")}
        return client.post(
            "/images", data={**form, "label": "9"}, content_type="multipart/form-data", **kwargs
        )

    refused = send(environ_base=REMOTE)
    assert refused.status_code == 401 and refused.get_json()["code"] == "credentials_required"
    assert client.get("/images").get_json()["total"] == 0  # nothing kept
    kept = send(environ_base=REMOTE, headers={"Authorization": f"Bearer {TOKEN}"})
    assert kept.status_code == 201
    assert client.get(kept.get_json()["url"]).get_json()["label"] == "9"


def test_reads_stay_open(token_app):
    image_id = stored_id_with_token(token_app)
    client = token_app.test_client()
    for path in READS:
        response = client.get(path.format(id=image_id), environ_base=REMOTE)
        assert response.status_code not in (401, 403), (path, response.status_code)


def test_a_short_token_stops_start_up(tmp_path, monkeypatch):
    from config import ConfigError

    with pytest.raises(ConfigError, match="ADMIN_TOKEN") as error:
        make_app(tmp_path, monkeypatch, ADMIN_TOKEN="short-secret")
    assert "short-secret" not in str(error.value)  # a secret is never printed, even a wrong one
