"""The OpenAPI 3 description, built by apispec from the routes and their docstrings.

A view documents itself: a one-line summary, then `---` and the YAML of its operations keyed by
HTTP method. Response bodies reference pydantic models that the view's module lists in `SCHEMAS`.
The error answers that many routes share are components too (`ERROR_RESPONSES`): a route names one
in a line, `413: {$ref: '#/components/responses/TooLarge'}`, and where it has more to say, writes a
`description` beside the `$ref` (OpenAPI 3.1 lets a reference override the description).
"""

from __future__ import annotations

import sys
from typing import Any

from apispec import APISpec
from apispec.yaml_utils import load_operations_from_docstring
from apispec_webframeworks.flask import FlaskPlugin
from flask import Flask
from pydantic import BaseModel

API_VERSION = "1.0.0"


class ErrorResponse(BaseModel):
    """The one error shape of every API error (extra fields may follow)."""

    error: str
    code: str


# Error answers that many routes share, by component name, with their default description.
ERROR_RESPONSES = {
    "BadRequest": "The request cannot be used as it is: `error` says why, `code` names the case.",
    "NotFound": "Nothing has this id or name (`error` says what was looked for).",
    "TooLarge": "The image is too large (over MAX_IMAGE_BYTES bytes or MAX_IMAGE_PIXELS pixels).",
    "NotAnImage": "The data is not an image.",
    "ModelNotLoaded": "The model this route needs is not loaded (code model_not_loaded; /ready says why).",
}


def add_schema(spec: APISpec, model: type[BaseModel]) -> None:
    """Register a pydantic model (and the models it nests) as components."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, nested in schema.pop("$defs", {}).items():
        if name not in spec.components.schemas:
            spec.components.schema(name, nested)
    if model.__name__ not in spec.components.schemas:
        spec.components.schema(model.__name__, schema)


def build_spec(app: Flask) -> dict[str, Any]:
    """Build the OpenAPI document of every documented route of the app."""
    spec = APISpec(
        title="Small vision models",
        version=API_VERSION,
        openapi_version="3.1.0",
        info={
            "description": "Handwritten digits, image classifiers, OCR of printed digit lines, nose "
            "tracking, and the store of every image received. Errors always have the shape "
            '{"error": message, "code": machine_code}.'
        },
    )
    add_schema(spec, ErrorResponse)
    error_body = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
    for name, description in ERROR_RESPONSES.items():
        spec.components.response(name, {"description": description, "content": error_body})
    for blueprint in app.blueprints.values():
        module = sys.modules.get(blueprint.import_name)
        for model in getattr(module, "SCHEMAS", ()):
            add_schema(spec, model)
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        view = app.view_functions.get(rule.endpoint)
        if view is None or not view.__doc__ or "---" not in view.__doc__:
            continue
        operations = load_operations_from_docstring(view.__doc__)
        methods = {m.lower() for m in (rule.methods or ())}
        operations = {m: op for m, op in operations.items() if m in methods}
        parameters = [
            {"name": arg, "in": "path", "required": True, "schema": {"type": _arg_type(rule, arg)}}
            for arg in sorted(rule.arguments)
        ]
        for op in operations.values():
            op.setdefault("tags", [rule.endpoint.split(".")[0]])
            op.setdefault("operationId", f"{rule.endpoint}.{'_'.join(sorted(rule.arguments)) or 'root'}")
            if parameters:
                op.setdefault("parameters", parameters)
        if operations:
            spec.path(path=FlaskPlugin.flaskpath2openapi(rule.rule), operations=operations)
    return spec.to_dict()


def _arg_type(rule, arg: str) -> str:
    converter = rule._converters.get(arg)  # werkzeug keeps converters per rule argument
    return "integer" if type(converter).__name__ == "IntegerConverter" else "string"


def get_spec(app: Flask) -> dict[str, Any]:
    """Return the app's OpenAPI document, built once per process."""
    if "openapi" not in app.extensions:
        app.extensions["openapi"] = build_spec(app)
    return app.extensions["openapi"]
