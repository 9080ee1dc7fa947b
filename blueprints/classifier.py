"""Image classifiers (our doodle model, Teachable Machine exports) at /api/classifier[/<name>], and their pages.

Teachable Machine models are added (POST /api/classifier/models, the export's zip) and removed
(DELETE /api/classifier/models/<name>) while serving: each worker reloads its classifiers before
any classifier request once a classifier folder has changed (models.registry.refresh). Those two
routes are in blueprints/classifier_models.py, on this blueprint.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify, render_template
from pydantic import BaseModel

from blueprints.classifier_folders import removable, upload_folder
from blueprints.errors import api_error
from blueprints.image_input import keep_image, load_image, request_options
from blueprints.openapi import image_operation
from blueprints.options import whole_number
from models import registry as model_registry
from models.classifier import Classifier
from models.registry import ModelNotLoaded, get_registry

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


# The routes that add and remove classifiers while serving, on this blueprint.
from blueprints import classifier_models  # noqa: E402, F401
