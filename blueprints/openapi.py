"""The OpenAPI 3 description, built by apispec from the routes and their docstrings.

A view documents itself: a one-line summary, then `---` and the YAML of its operations keyed by
HTTP method. Response bodies reference pydantic models that the view's module lists in `SCHEMAS`;
what several of a module's routes share is written once in its `PARAMETERS` or `RESPONSES`
(components by name) and referenced, e.g. `200: {$ref: '#/components/responses/NosePosition'}`.
The error answers that many routes share are components too (`ERROR_RESPONSES`): a route names one
in a line, `413: {$ref: '#/components/responses/TooLarge'}`, and where it has more to say, writes a
`description` beside the `$ref` (OpenAPI 3.1 lets a reference override the description). The
image a model route reads is one request body component (`REQUEST_BODIES`), named the same way.
Where routes are one operation under several paths (tracking's original routes, a classifier by
default or by name), what they share is written once in the module's `OPERATIONS` (by name: the
keys of an operation, most often `image_operation(...)`) and a docstring names it with
`x-operation: Track`, writing only what is its own: its summary and description win, and its
`responses` are added to the shared ones.
Under `python -OO` the docstrings are gone: the document still builds, without paths.
"""

from __future__ import annotations

import copy
import logging
import sys
from typing import Any

from apispec import APISpec
from apispec.yaml_utils import load_operations_from_docstring
from apispec_webframeworks.flask import FlaskPlugin
from flask import Flask
from pydantic import BaseModel
from werkzeug.routing import IntegerConverter, UnicodeConverter

log = logging.getLogger(__name__)

API_VERSION = "1.0.0"


class ErrorResponse(BaseModel):
    """The one error shape of every API error (extra fields may follow)."""

    error: str
    code: str


def image_json(fields: tuple[str, ...], description: str) -> dict[str, Any]:
    """Return the JSON body schema of a route that reads its image from one of `fields`."""
    return {
        "type": "object",
        "description": description,
        "properties": {field: {"$ref": "#/components/schemas/ImageField"} for field in fields},
        "anyOf": [{"required": [field]} for field in fields],
    }


# The image every model route reads (blueprints/image_input.py), written once: a route names it
# with `requestBody: {$ref: '#/components/requestBodies/Image'}` and lists its options (`top`,
# `detect`, ...) as query parameters, which the route also reads from the JSON body or the form.
# The schemas say as much as a schema can: base64 that decodes, arrays of pixel values. Whether
# the bytes are an image, and one within the limits, only decoding tells (415 / 413).
_B64 = "[A-Za-z0-9+/]"
BASE64_IMAGE = rf"^(data:image/[a-z0-9.+-]+;base64,)?({_B64}{{4}})*({_B64}{{4}}|{_B64}{{3}}=|{_B64}{{2}}==)$"
_PIXEL = {"type": "number", "minimum": 0, "maximum": 255}
IMAGE_FIELDS = ("image", "base64_drawing", "file")
UPLOAD_FIELDS = ("image", "file")
IMAGE_SCHEMAS: dict[str, dict[str, Any]] = {
    "ImageField": {
        "description": "A data URL or plain base64 of a PNG, JPEG, WebP, ... image, or the original "
        "OCR service's legacy nested uint8 array: gray [h][w] or BGR [h][w][3], every row as long "
        "as the first (also accepted as its JSON text). Line breaks in base64, URL-safe base64 and "
        "missing padding are accepted too.",
        "oneOf": [
            {"type": "string", "pattern": BASE64_IMAGE},
            {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "oneOf": [
                            _PIXEL,
                            {"type": "array", "items": _PIXEL, "minItems": 3, "maxItems": 3},
                        ]
                    },
                },
            },
        ],
    },
    "ImageJson": image_json(
        IMAGE_FIELDS,
        "The image in `image`; `base64_drawing` (the classifier's "
        "original field, read first there) and `file` are read too. The route's options may sit beside it.",
    ),
    "UploadJson": image_json(
        UPLOAD_FIELDS, "The image in `file` or `image`; `model` and `label` may sit beside it."
    ),
    "ImageUpload": {
        "type": "object",
        "description": "A multipart upload in the field `image` or `file`; the route's options may be "
        "form fields too.",
        "properties": {
            field: {"type": "string", "format": "binary", "minLength": 1} for field in UPLOAD_FIELDS
        },
        "anyOf": [{"required": [field]} for field in UPLOAD_FIELDS],
    },
}
_BYTES = {"schema": {"type": "string", "format": "binary", "minLength": 1}}


def image_body(json_schema: str) -> dict[str, Any]:
    """Return a request body: the image as JSON, a multipart upload, or raw bytes with their type."""
    return {
        "description": "The image as JSON, a multipart upload, or the raw bytes with their image type.",
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{json_schema}"}},
            "multipart/form-data": {"schema": {"$ref": "#/components/schemas/ImageUpload"}},
            "image/*": _BYTES,
            "application/octet-stream": _BYTES,
        },
    }


REQUEST_BODIES: dict[str, dict[str, Any]] = {
    "Image": image_body("ImageJson"),
    # POST /images reads `file` and `image` only.
    "Upload": image_body("UploadJson"),
}

# Error answers that many routes share, by component name, with their default description.
ERROR_RESPONSES = {
    "BadRequest": "The request cannot be used as it is: `error` says why, `code` names the case.",
    "NotFound": "Nothing has this id or name (`error` says what was looked for).",
    "TooLarge": "The body, the image or one of its frames is too large (payload_too_large: over "
    "MAX_CONTENT_LENGTH or MAX_IMAGE_BYTES bytes; image_too_large: over MAX_IMAGE_PIXELS pixels), or the "
    "image would cost too much to decode (image_too_complex: too many JPEG scans or frames).",
    "NotAnImage": "The data is not an image.",
    "Unreadable": "An image the model has no answer for (`code` says why, e.g. image_too_small).",
    "ModelNotLoaded": "The model this route needs is not loaded (code model_not_loaded; /ready says why).",
}


def image_operation(parameter: str, answer: str, bad_request: str, unreadable: str) -> dict[str, Any]:
    """Return a model route's operation: one option, the image body, its answer and the image errors."""
    return {
        "parameters": [{"$ref": f"#/components/parameters/{parameter}"}],
        "requestBody": {"$ref": "#/components/requestBodies/Image"},
        "responses": {
            200: {"$ref": f"#/components/responses/{answer}"},
            400: {"$ref": "#/components/responses/BadRequest", "description": bad_request},
            413: {"$ref": "#/components/responses/TooLarge"},
            415: {"$ref": "#/components/responses/NotAnImage"},
            422: {"$ref": "#/components/responses/Unreadable", "description": unreadable},
            503: {"$ref": "#/components/responses/ModelNotLoaded"},
        },
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
    for name, schema in IMAGE_SCHEMAS.items():
        spec.components.schema(name, schema)
    shared: dict[str, dict[str, Any]] = {}
    for blueprint in app.blueprints.values():
        module = sys.modules.get(blueprint.import_name)
        shared.update(getattr(module, "OPERATIONS", {}))
        for model in getattr(module, "SCHEMAS", ()):
            add_schema(spec, model)
        for name, parameter in getattr(module, "PARAMETERS", {}).items():
            spec.components.parameter(name, parameter["in"], parameter)
        for name, response in getattr(module, "RESPONSES", {}).items():
            spec.components.response(name, response)
    if sys.flags.optimize >= 2:
        log.warning("python -OO strips the docstrings that document the routes: /openapi.json lists none")
    body_refs: dict[tuple[str, str], dict] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        view = app.view_functions.get(rule.endpoint)
        if view is None or not view.__doc__ or "---" not in view.__doc__:
            continue
        operations = load_operations_from_docstring(view.__doc__)
        methods = {m.lower() for m in (rule.methods or ())}
        operations = {
            m: with_shared(op, shared, rule.endpoint) for m, op in operations.items() if m in methods
        }
        path_parameters = [
            {"name": arg, "in": "path", "required": True, "schema": _arg_schema(rule, arg)}
            for arg in sorted(rule.arguments)
        ]
        for method, op in operations.items():
            op.setdefault("tags", [rule.endpoint.split(".")[0]])
            op.setdefault("operationId", f"{rule.endpoint}.{'_'.join(sorted(rule.arguments)) or 'root'}")
            # apispec takes a parameter component by its name, not as a {$ref: ...}.
            own = [p["$ref"].rsplit("/", 1)[-1] if "$ref" in p else p for p in op.get("parameters", ())]
            named = {p["name"] for p in own if isinstance(p, dict) and p.get("in") == "path"}
            missing = [p for p in path_parameters if p["name"] not in named]
            if own or missing:
                op["parameters"] = missing + own
            # apispec reads a requestBody's content and has no requestBodies components: a
            # reference goes back in after it has resolved the rest.
            if "$ref" in op.get("requestBody", {}):
                body_refs[FlaskPlugin.flaskpath2openapi(rule.rule), method] = op.pop("requestBody")
        if operations:
            spec.path(path=FlaskPlugin.flaskpath2openapi(rule.rule), operations=operations)
    document = spec.to_dict()
    # spec.path keeps its own copy of the operations: the references go into the document.
    for (path, method), body in body_refs.items():
        document["paths"][path][method]["requestBody"] = body
    document["components"]["requestBodies"] = REQUEST_BODIES
    # Every option is read by blueprints/options.py (or the gallery's filters), where an empty value
    # is no value: an HTML form sends its empty fields, e.g. `?until=`.
    parameters = [
        *document["components"].get("parameters", {}).values(),
        *(p for item in document["paths"].values() for op in item.values() for p in op.get("parameters", ())),
    ]
    for parameter in parameters:
        if parameter.get("in") == "query" and not parameter.get("required"):
            parameter.setdefault("allowEmptyValue", True)
    return document


def with_shared(
    operation: dict[str, Any], shared: dict[str, dict[str, Any]], endpoint: str
) -> dict[str, Any]:
    """Return an operation with the shared operation it names (`x-operation`) beneath its own keys."""
    name = operation.pop("x-operation", None)
    if name is None:
        return operation
    if name not in shared:
        raise ValueError(f"{endpoint} names the shared operation {name!r}, which no OPERATIONS defines")
    base = copy.deepcopy(shared[name])
    responses = {**base.get("responses", {}), **operation.get("responses", {})}
    merged = {**base, **operation}
    if responses:
        merged["responses"] = dict(sorted(responses.items(), key=lambda item: str(item[0])))
    return merged


def _arg_schema(rule, arg: str) -> dict[str, Any]:
    converter = rule._converters.get(arg)  # werkzeug keeps converters per rule argument
    if isinstance(converter, IntegerConverter):
        return {"type": "integer"}
    if isinstance(converter, UnicodeConverter) or converter is None:
        return {"type": "string"}
    # A converter of the app's own (an image id) matches its regex, and nothing else routes there.
    return {"type": "string", "pattern": f"^{converter.regex}$"}


def get_spec(app: Flask) -> dict[str, Any]:
    """Return the app's OpenAPI document, built once per process."""
    if "openapi" not in app.extensions:
        app.extensions["openapi"] = build_spec(app)
    return app.extensions["openapi"]
