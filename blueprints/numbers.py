"""Handwritten digits: the drawing page at / and POST /api/predict."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify, render_template
from pydantic import BaseModel

from blueprints.errors import api_error
from blueprints.image_input import keep_image, load_image, request_options
from blueprints.options import whole_number
from models.registry import get_registry

bp = Blueprint("numbers", __name__)

MODEL = "numbers"
LOW_CERTAINTY = "Certainty too low for a reliable prediction. Try again."


class DigitScore(BaseModel):
    """One digit and its certainty in percent."""

    digit: int
    certainty: float


class DigitPrediction(BaseModel):
    """The digit, its certainty in percent (2 decimals), and the `top` best digits when asked."""

    prediction: int
    certainty: float
    top: list[DigitScore] | None = None


class LowCertainty(BaseModel):
    """422: the best guess is under the threshold; it is still given."""

    error: str
    code: str
    prediction: int
    certainty: float
    top: list[DigitScore] | None = None


SCHEMAS = (DigitPrediction, LowCertainty)


def parse_top(value: Any) -> int:
    """Read the optional `top`: a whole number from 1 to 10 (0 when absent)."""
    return whole_number(value, "top", default=0, minimum=1, maximum=10, code="invalid_top")


@bp.get("/")
def index():
    """Show the drawing page."""
    return render_template("index.html", threshold=current_app.config["PREDICT_THRESHOLD"])


@bp.post("/api/predict")
def predict():
    """Recognise one handwritten digit.
    ---
    post:
      summary: Recognise a handwritten digit (0-9)
      description: >
        The drawing is made to look like an MNIST digit (white on black, 20x20 box, centred by
        centre of mass) and classified. Under the certainty threshold (PREDICT_THRESHOLD, default
        60) the answer is 422 low_certainty, still with the prediction and its certainty.
      parameters:
        - name: top
          in: query
          schema: {type: integer, minimum: 1, maximum: 10}
          description: Also list the k best digits (also read from the JSON body or the form).
      requestBody: {$ref: '#/components/requestBodies/Image'}
      responses:
        200:
          description: '{"prediction": 5, "certainty": 75.32}; certainty is a percentage.'
          content:
            application/json:
              schema: {$ref: '#/components/schemas/DigitPrediction'}
        400:
          $ref: '#/components/responses/BadRequest'
          description: No image, bad base64 or JSON, or a bad `top`.
        413: {$ref: '#/components/responses/TooLarge'}
        415: {$ref: '#/components/responses/NotAnImage'}
        422:
          description: >
            An image with no digit to read: certainty under the threshold (code low_certainty,
            the guess included), or nothing drawn (code nothing_drawn).
          content:
            application/json:
              schema:
                anyOf:
                  - {$ref: '#/components/schemas/LowCertainty'}
                  - {$ref: '#/components/schemas/ErrorResponse'}
        503: {$ref: '#/components/responses/ModelNotLoaded'}
    """
    model = get_registry().get(MODEL)
    image = load_image()
    top = parse_top(request_options().get("top"))
    result = model(image, top=top)
    keep_image(
        image,
        endpoint="predict",
        model=MODEL,
        prediction=str(result["prediction"]),
        confidence=result["certainty"] / 100,
    )
    if result["certainty"] < current_app.config["PREDICT_THRESHOLD"]:
        api_error(422, "low_certainty", LOW_CERTAINTY, **result)
    return jsonify(result)
