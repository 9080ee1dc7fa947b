"""Teachable Machine classifiers added (POST /api/classifier/models) and removed (DELETE) while serving.

The routes live on the classifier blueprint (blueprints.classifier imports this module last).
"""

from __future__ import annotations

import logging

from flask import current_app, jsonify, request

from blueprints.auth import ensure_admin
from blueprints.classifier import RESERVED_NAMES, bp, classifier_rows, classifier_specs, require_known
from blueprints.classifier_folders import removable, upload_folder
from blueprints.errors import api_error
from models import registry as model_registry
from models.uploads import ExportRefused, install_export, remove_export

log = logging.getLogger(__name__)


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
