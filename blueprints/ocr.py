"""OCR of printed lines (OCR-B digits, GS1 element strings): the page at /ocr and POST /api/ocr."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, render_template
from pydantic import BaseModel

from blueprints.image_input import keep_image, load_image, request_options
from blueprints.options import choice
from models.registry import get_registry

bp = Blueprint("ocr", __name__)

MODEL = "ocr"
FORMATS = ("text", "probabilities")


class OcrCharacter(BaseModel):
    """One character read: its confidence (0..1) and its [x, y, w, h] box in image pixels."""

    char: str
    confidence: float
    box: list[int]


class OcrLine(BaseModel):
    """One line of text, its characters and, for a GS1 element string, its fields."""

    text: str
    digits: str
    confidence: float
    box: list[int]
    characters: list[OcrCharacter]
    fields: dict[str, Any]


class OcrResult(BaseModel):
    """Every line read, top to bottom; `confidence` is the lowest character confidence."""

    text: str
    digits: str
    confidence: float
    characters: list[OcrCharacter]
    lines: list[OcrLine]
    fields: dict[str, Any]
    deskew_degrees: float
    inverted: bool


SCHEMAS = (OcrCharacter, OcrLine, OcrResult)


def parse_format(value: Any) -> str:
    """Read the optional `format`: "text" (default) or "probabilities" (the original's answer)."""
    return choice(value, "format", FORMATS, default="text", code="invalid_format")


@bp.get("/ocr")
def page():
    """Show the OCR page: upload or paste an image, see the text and each character's box."""
    return render_template("ocr.html")


@bp.post("/api/ocr")
def predict():
    """Read the printed lines of an image.
    ---
    post:
      summary: Read printed lines (OCR-B digits, GS1 element strings)
      description: >
        Finds every text line (a tight crop or a band of a document, 150-600 dpi, rotated up to
        5 degrees, light or dark background), cuts each line into glyphs, classifies them among
        0-9 ( ) * < > + - / A-Z, and rebuilds the lines with spaces from the gaps. A GS1 element
        string such as (253)3610321456881 1234567890(17)010120(3902)001000 *11* is parsed into
        `fields`, with check digits validated; the digits between asterisks are the document
        line's control key. With "format": "probabilities" the answer is the original service's:
        a JSON list with, for each digit read, its 10 probabilities (0-9).
      parameters:
        - name: format
          in: query
          schema: {type: string, enum: [text, probabilities], default: text}
          description: The answer's form (also read from the JSON body or the form).
      requestBody: {$ref: '#/components/requestBodies/Image'}
      responses:
        200:
          description: >
            The lines read. With format=probabilities, a list of [p0..p9] lists, one per digit.
          content:
            application/json:
              schema:
                oneOf:
                  - {$ref: '#/components/schemas/OcrResult'}
                  - {type: array, items: {type: array, items: {type: number}, minItems: 10, maxItems: 10}}
        400:
          $ref: '#/components/responses/BadRequest'
          description: No image, bad base64, JSON or nested array, or a bad `format`.
        413: {$ref: '#/components/responses/TooLarge'}
        415: {$ref: '#/components/responses/NotAnImage'}
        422:
          description: >
            An image OCR cannot read: too much text in it (code too_much_text; crop it to the lines
            to read), or under 8x8 pixels (code image_too_small).
          content:
            application/json:
              schema: {$ref: '#/components/schemas/ErrorResponse'}
        503: {$ref: '#/components/responses/ModelNotLoaded'}
    """
    model = get_registry().get(MODEL)
    image = load_image()
    fmt = parse_format(request_options().get("format"))
    result = model(image, format=fmt)
    keep_image(image, endpoint="ocr", model=MODEL, prediction=result["text"], confidence=result["confidence"])
    if fmt == "probabilities":
        return jsonify(result["probabilities"])
    return jsonify(result)
