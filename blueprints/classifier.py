"""Image classifiers (our doodle model, Teachable Machine exports) at /api/classifier[/<name>], and their pages.

Teachable Machine models are added (POST /api/classifier/models, the export's zip) and removed
(DELETE /api/classifier/models/<name>) while serving: each worker reloads its classifiers before
any classifier request once a classifier folder has changed (models.registry.refresh).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from flask import Blueprint, current_app, jsonify, render_template, request
from pydantic import BaseModel

from blueprints.auth import ensure_admin
from blueprints.errors import api_error
from blueprints.image_input import keep_image, load_image, request_options
from blueprints.openapi import image_operation
from blueprints.options import whole_number
from models import registry as model_registry
from models.classifier import Classifier
from models.registry import ModelNotLoaded, get_registry
from models.uploads import ExportRefused, install_export, is_uploaded, remove_export

log = logging.getLogger(__name__)

bp = Blueprint("classifier", __name__)

IMAGE_FIELDS = ("base64_drawing", "image", "file")
GET_HINT = "POST a base64-encoded drawing as base64_drawing."
DEFAULT_TOP = 3
# More than any classifier has labels; a bound the schema can state.
MAX_TOP = 1000


class LabelScore(BaseModel):
    """One label and its probability."""

    label: str
    confidence: float


class Prediction(BaseModel):
    """The best label, its probability (0..1) and the best `top` labels."""

    label: str
    confidence: float
    top: list[LabelScore]
    model: str


class GetHint(BaseModel):
    """The original service's answer to a GET: how to call the endpoint (no label: JSON null)."""

    label: None
    msg: str
    error: str
    code: str


class ClassifierInfo(BaseModel):
    """One configured classifier as this worker sees it."""

    name: str
    kind: str | None = None
    url: str
    default: bool
    loaded: bool
    input_mode: str | None = None
    labels: list[str]
    error: str | None = None
    # The export format of a Teachable Machine model (keras_h5, tfjs, tflite, tflite_quantized).
    format: str | None = None
    # Added through the API, so it may be removed through it.
    removable: bool = False


class ClassifierList(BaseModel):
    """Every configured classifier, and the one served at /api/classifier."""

    default: str
    models: list[ClassifierInfo]


SCHEMAS = (Prediction, GetHint, ClassifierList, ClassifierInfo)
# Names a new model may not take: they are routes.
RESERVED_NAMES = frozenset({"models"})
# What both POST routes share, named in OPERATIONS below.
PARAMETERS = {
    "ClassifierTop": {
        "name": "top",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_TOP, "default": DEFAULT_TOP},
        "description": "How many labels to list (also read from the JSON body or the form).",
    }
}
RESPONSES = {
    "Prediction": {
        "description": "The best label, its probability (0..1) and the best `top` labels.",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Prediction"}}},
    }
}
# Both POST routes are one operation (a classifier by default or by name): each docstring names it
# (`x-operation: Classify`) and adds its summary; the named route adds its 404.
OPERATIONS = {
    "Classify": image_operation(
        parameter="ClassifierTop",
        answer="Prediction",
        bad_request="No image, bad base64, bad JSON or a bad `top`.",
        unreadable="A blank drawing, for a drawing classifier (code nothing_drawn).",
    )
}


@bp.before_request
def serve_current_classifiers() -> None:
    """Serve the classifiers as they are now: reload them when a folder changed (an upload anywhere)."""
    model_registry.refresh(current_app)


def classifier_specs() -> dict[str, dict]:
    """Return the configured classifiers by name."""
    return get_registry().by_class(Classifier)


def require_known(name: str) -> None:
    """Stop with 404 JSON unless a classifier of this name is configured."""
    specs = classifier_specs()
    if name not in specs:
        api_error(
            404, "unknown_model", f"There is no classifier named '{name}'.", model=name, models=sorted(specs)
        )


def get_classifier(name: str) -> Classifier:
    """Return a loaded classifier, or stop with 404 (unknown) or 503 (configured, not loaded)."""
    require_known(name)
    return get_registry().get(name)


def parse_top(value: Any) -> int:
    """Read the `top` option: a whole number from 1 to MAX_TOP (DEFAULT_TOP when absent)."""
    return whole_number(value, "top", default=DEFAULT_TOP, minimum=1, maximum=MAX_TOP, code="invalid_top")


def classify(name: str):
    """Run one classifier on the request's image and answer its prediction."""
    model = get_classifier(name)
    image = load_image(fields=IMAGE_FIELDS)
    top = parse_top(request_options().get("top"))
    result = model(image, top=top)
    keep_image(
        image, endpoint="classifier", model=name, prediction=result["label"], confidence=result["confidence"]
    )
    return jsonify({**result, "model": name})


def get_hint():
    """Answer a GET like the original service: 400 and how to call the endpoint."""
    return jsonify({"label": None, "msg": GET_HINT, "error": GET_HINT, "code": "use_post"}), 400


@bp.get("/api/classifier")
def hint_default():
    """Explain how to call the classifier.
    ---
    get:
      summary: How to call the classifier (always 400, as the original service)
      responses:
        400:
          description: '{"label": null, "msg": "POST a base64-encoded drawing as base64_drawing."}'
          content:
            application/json:
              schema: {$ref: '#/components/schemas/GetHint'}
    """
    return get_hint()


@bp.post("/api/classifier")
def predict_default():
    """Classify an image with the default classifier.
    ---
    post:
      summary: Classify a drawing or photo with the default classifier (DEFAULT_CLASSIFIER)
      x-operation: Classify
    """
    name = current_app.config["DEFAULT_CLASSIFIER"]
    if name not in classifier_specs():
        raise ModelNotLoaded(name, "DEFAULT_CLASSIFIER names no configured classifier")
    return classify(name)


@bp.get("/api/classifier/models")
def list_models():
    """List the configured classifiers.
    ---
    get:
      summary: The configured classifiers, their labels, and whether each is loaded
      responses:
        200:
          description: Every classifier; `default` is the one served at /api/classifier.
          content:
            application/json:
              schema: {$ref: '#/components/schemas/ClassifierList'}
    """
    default = current_app.config["DEFAULT_CLASSIFIER"]
    return jsonify({"default": default, "models": classifier_rows()})


def classifier_rows() -> list[dict]:
    """Describe every configured classifier: kind, labels, and whether it is loaded."""
    registry = get_registry()
    default = current_app.config["DEFAULT_CLASSIFIER"]
    rows = []
    uploads = upload_folder()
    for name, spec in classifier_specs().items():
        model = registry.models.get(name)
        rows.append(
            ClassifierInfo(
                name=name,
                kind=spec.get("type"),
                url=f"/api/classifier/{name}",
                default=name == default,
                loaded=model is not None,
                input_mode=model.input_mode if model is not None else None,
                labels=list(model.labels) if model is not None else [],
                error=registry.failures.get(name),
                format=getattr(model, "source_format", None),
                removable=uploads is not None and removable(name, spec, uploads),
            ).model_dump()
        )
    return rows


@bp.get("/api/classifier/<name>")
def hint_named(name: str):
    """Explain how to call one classifier.
    ---
    get:
      summary: How to call this classifier (400 when it exists, 404 when it does not)
      responses:
        400:
          description: '{"label": null, "msg": "POST a base64-encoded drawing as base64_drawing."}'
          content:
            application/json:
              schema: {$ref: '#/components/schemas/GetHint'}
        404: {$ref: '#/components/responses/NotFound'}
    """
    require_known(name)
    return get_hint()


@bp.post("/api/classifier/<name>")
def predict_named(name: str):
    """Classify an image with a named classifier.
    ---
    post:
      summary: Classify a drawing or photo with the classifier `name` (see /api/classifier/models)
      x-operation: Classify
      responses:
        404: {$ref: '#/components/responses/NotFound'}
    """
    return classify(name)


def made_for(name: str) -> str | None:
    """Return what a loaded classifier was trained on ("drawings" or "photos"); None when not loaded."""
    model = get_registry().models.get(name)
    return model.made_for if model is not None else None


@bp.get("/doodle")
def doodle_page():
    """Serve the page that classifies a drawing while it is drawn."""
    rows = classifier_rows()
    doodle_models = [row for row in rows if made_for(row["name"]) == "drawings"]
    default = current_app.config["DEFAULT_CLASSIFIER"]
    chosen = doodle_models[0] if doodle_models else next((r for r in rows if r["name"] == default), None)
    return render_template(
        "doodle.html", model=chosen["name"] if chosen else default, labels=chosen["labels"] if chosen else []
    )


@bp.get("/classify")
def classify_page():
    """Serve the page that classifies an uploaded photo with any configured classifier."""
    rows = classifier_rows()
    # Photos suit Teachable Machine models better than the doodle model, so one is preselected.
    photo_models = [row["name"] for row in rows if made_for(row["name"]) == "photos"]
    default = photo_models[0] if photo_models else current_app.config["DEFAULT_CLASSIFIER"]
    return render_template(
        "classify.html",
        classifiers=rows,
        default=default,
        admin_token_set=bool(current_app.config.get("ADMIN_TOKEN")),
        can_add=upload_folder() is not None,
    )


# --- models added and removed while serving -------------------------------------------------------


def upload_folder() -> Path | None:
    """Return the folder new classifiers go to (the first of CLASSIFIER_DIRS), or None when there is none."""
    folders = model_registry.classifier_folders(current_app)
    return folders[0] if folders else None


def export_folder(spec: dict) -> Path:
    """Return the folder of a classifier folder's model (its spec names the main file or the folder)."""
    path = Path(spec.get("path", ""))
    return path if path.suffix == "" else path.parent


def removable(name: str, spec: dict, uploads: Path) -> bool:
    """Tell whether a classifier was added through the API (so it may be removed through it)."""
    if name in current_app.config["MODELS"]:
        return False
    folder = export_folder(spec)
    return folder.parent.resolve() == uploads.resolve() and is_uploaded(folder)


@bp.post("/api/classifier/models")
def add_model():
    """Add a Teachable Machine model from the zip of its export (the admin only).
    ---
    post:
      summary: Add a classifier from the zip Teachable Machine's "Download my model" gives (Keras, TensorFlow.js or TensorFlow Lite)
      description: The export is converted to ONNX, checked (one inference; as many outputs as labels) and
        moved into the first CLASSIFIER_DIRS folder in one rename; every worker serves it from its next
        classifier request, and after a restart. A refused zip leaves nothing behind.
      requestBody:
        required: true
        content:
          multipart/form-data:
            schema:
              type: object
              required: [name, file]
              properties:
                name:
                  type: string
                  pattern: '^[a-z0-9][a-z0-9_-]{0,47}$'
                  description: The new classifier's name, served at /api/classifier/<name>.
                file:
                  type: string
                  format: binary
                  description: The zip as Teachable Machine gives it.
      responses:
        201:
          description: Added and served; the classifier as /api/classifier/models lists it.
          headers:
            Location: {schema: {type: string}, description: Where the new classifier answers.}
          content:
            application/json:
              schema: {$ref: '#/components/schemas/ClassifierInfo'}
        400:
          $ref: '#/components/responses/BadRequest'
          description: No zip or name, a name that is not a slug, not a zip, an entry outside the folder,
            a link, an encrypted entry, a file no export holds, or an export with files missing.
        401: {$ref: '#/components/responses/Unauthorized'}
        403: {$ref: '#/components/responses/AdminOnly'}
        409:
          $ref: '#/components/responses/BadRequest'
          description: A model of that name exists (model_exists), or no classifier folder is set.
        413:
          $ref: '#/components/responses/BadRequest'
          description: The request, or what the zip would unpack to, is too large (archive_too_large).
        422:
          $ref: '#/components/responses/BadRequest'
          description: The export cannot be converted or does not check out (invalid_model).
    """
    ensure_admin("add classifiers")
    folder = upload_folder()
    if folder is None:
        api_error(
            409, "no_classifier_folder", "CLASSIFIER_DIRS is empty: there is no folder to add a model to."
        )
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        api_error(400, "missing_file", "Send the export's zip as the multipart file field 'file'.")
    name = request.form.get("name", "").strip()
    taken = set(RESERVED_NAMES) | set(model_registry.configured_specs(current_app))
    try:
        install_export(upload.stream, name, folder, taken=taken, threads=current_app.config["ONNX_THREADS"])
    except ExportRefused as exc:
        api_error(exc.status, exc.code, str(exc))
    except OSError as exc:
        log.error("cannot add model %s to %s: %s", name, folder, exc)
        api_error(503, "classifier_folder_unwritable", "The classifier folder cannot be written to.")
    model_registry.refresh(current_app)
    row = next(row for row in classifier_rows() if row["name"] == name)
    return jsonify(row), 201, {"Location": row["url"]}


@bp.delete("/api/classifier/models/<name>")
def delete_model(name: str):
    """Remove a classifier added through the API (the admin only).
    ---
    delete:
      summary: Remove a classifier that was added through the API; every worker stops serving it
      responses:
        204:
          description: Removed.
        401: {$ref: '#/components/responses/Unauthorized'}
        403: {$ref: '#/components/responses/AdminOnly'}
        404: {$ref: '#/components/responses/NotFound'}
        409:
          $ref: '#/components/responses/BadRequest'
          description: The classifier was configured or dropped in by hand, not added through the API (not_removable).
    """
    ensure_admin("remove classifiers")
    require_known(name)
    folder = upload_folder()
    if folder is None or not removable(name, classifier_specs()[name], folder):
        api_error(
            409,
            "not_removable",
            f"The classifier '{name}' was not added through the API; remove it from the configuration or its folder.",
            model=name,
        )
    try:
        remove_export(name, folder)
    except ExportRefused as exc:
        api_error(exc.status, exc.code, str(exc), model=name)
    model_registry.refresh(current_app)
    return "", 204
