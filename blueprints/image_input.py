"""The one image-input path of every endpoint: find the image in a request, decode it, keep it.

Accepted: a data URL, plain base64, a multipart upload (field `image` or `file`), raw bytes
with an `image/*` Content-Type, and the original OCR service's legacy JSON: a JSON string
(or list) of a nested uint8 array, gray (H, W) or BGR (H, W, 3). Decoding itself (and its
limits and errors) is `models.image`; this module only finds the image in the request.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import current_app, g, request

from blueprints.errors import api_error
from models.image import InputImage, decode_bytes, decode_value, parse_json
from models.runtime import ModelInputError

JSON_FIELDS = ("image", "base64_drawing", "file")
FILE_FIELDS = ("image", "file")
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


def request_options() -> dict[str, Any]:
    """Return the request's non-image options: JSON body fields, else form and query values."""
    body = g.get("json_body")  # load_image keeps the body it parsed: no second parse
    if body is None and request.is_json:
        body = request.get_json(silent=True)
    options: dict[str, Any] = dict(request.args.items())
    if isinstance(body, dict):
        options.update({k: v for k, v in body.items() if k not in JSON_FIELDS})
    else:
        options.update({k: v for k, v in request.form.items() if k not in JSON_FIELDS})
    return options


def load_image(fields: tuple[str, ...] = JSON_FIELDS) -> InputImage:
    """Find and decode the request's image, or stop the request with a 4xx JSON error."""
    limits = {
        "max_bytes": current_app.config["MAX_IMAGE_BYTES"],
        "max_pixels": current_app.config["MAX_IMAGE_PIXELS"],
    }
    mimetype = request.mimetype or ""
    # Only a form can carry files; asking a JSON request for them costs a form parse for nothing.
    if mimetype in FORM_TYPES:
        for name in FILE_FIELDS:
            upload = request.files.get(name)
            if upload is not None:
                data = upload.read(limits["max_bytes"] + 1)
                if not data:
                    api_error(400, "empty_image", f"The uploaded file '{name}' is empty.")
                return decode_bytes(data, source="multipart", filename=upload.filename, **limits)
        if request.files:
            api_error(
                400,
                "missing_image",
                f"No image found: upload the file in a multipart field named {' or '.join(FILE_FIELDS)}.",
                fields=list(request.files),
            )

    if mimetype.startswith("image/") or mimetype == "application/octet-stream":
        data = request.get_data(cache=True)
        if not data:
            api_error(400, "empty_body", "The request body is empty: send the image bytes.")
        return decode_bytes(data, source="raw", **limits)

    if request.is_json or mimetype in ("", "text/plain"):
        raw = request.get_data(cache=True)
        if not raw.strip():
            api_error(400, "empty_body", _missing_message(fields))
        try:
            body = parse_json(raw)  # nesting bounded before parsing, numbers finite
        except ModelInputError as exc:
            api_error(400, "invalid_json", f"The request body {exc.message.removeprefix('The JSON ')}")
        if not isinstance(body, dict):
            api_error(400, "invalid_json", "The JSON body must be an object with an image field.")
        g.json_body = body
        for name in fields:
            if name in body:
                return decode_value(body[name], name, **limits)
        api_error(400, "missing_image", _missing_message(fields), fields=sorted(body))

    for name in fields:
        if name in request.form:
            return decode_value(request.form[name], name, **limits)
    api_error(400, "missing_image", _missing_message(fields))


def _missing_message(fields: tuple[str, ...]) -> str:
    return (
        f"No image found: send JSON with a field {' or '.join(repr(f) for f in fields)} "
        "(data URL or base64), a multipart file 'image', or raw image bytes."
    )


def keep_image(
    image: InputImage,
    *,
    endpoint: str,
    model: str | None,
    prediction: str | None,
    confidence: float | None,
) -> None:
    """Hand a received image and its prediction to the store; never fails the request."""
    if not current_app.config["SAVE_IMAGES"]:
        return
    store = current_app.extensions.get("store")
    if store is None:
        return
    try:
        store.submit(image, endpoint=endpoint, model=model, prediction=prediction, confidence=confidence)
    except Exception:  # saving is best effort: the prediction is what the client asked for
        logging.getLogger(__name__).exception("could not queue image from %s for saving", endpoint)
