"""Nose tracking: POST /image-64, /image-bin (the original routes), /api/track; /track and /dashboard.

The three routes take every image format of the service; the original two keep their names, forms
and answers (their original forms are JSON base64 and a multipart upload), so old clients work.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import Blueprint, jsonify, render_template
from pydantic import BaseModel

from blueprints.image_input import keep_image, load_image, request_options
from blueprints.instrumentation import route_stats
from blueprints.openapi import image_operation
from blueprints.options import flag
from models.image import InputImage
from models.registry import get_registry

bp = Blueprint("tracking", __name__)
log = logging.getLogger(__name__)

MODEL = "tracking"
# Dashboard rows: Flask endpoint -> (path, its original form). The original counted base64 and binary
# (each route now takes every format; the column keeps the original's names).
ROUTES = {
    "tracking.image_64": ("/image-64", "base64"),
    "tracking.image_bin": ("/image-bin", "binary"),
    "tracking.track_any": ("/api/track", "any format"),
}


class FaceBox(BaseModel):
    """A face box, normalised to the input image (x, y = top-left corner)."""

    x: float
    y: float
    w: float
    h: float


class NoseFace(BaseModel):
    """One face: its nose tip and box, normalised to the input image."""

    x: float
    y: float
    face: FaceBox


class NosePosition(BaseModel):
    """The nose tip of the largest face, normalised to the image (0..1), and every face found.

    `mode` is "detected" (BlazeFace found the faces) or "whole_image" (the image is the face
    crop). With no face only `found: false` is given.
    """

    found: bool
    x: float | None = None
    y: float | None = None
    mode: str | None = None
    face: FaceBox | None = None
    faces: list[NoseFace] | None = None


class RouteStats(BaseModel):
    """Requests to one tracking route, across every worker, and their latency."""

    path: str
    takes: str
    count: int
    mean_ms: float | None = None
    p95_ms: float | None = None


class TrackingStats(BaseModel):
    """The dashboard's figures."""

    routes: list[RouteStats]
    total: int


SCHEMAS = (NosePosition, TrackingStats)
# What the three tracking routes share, named in OPERATIONS below.
PARAMETERS = {
    "Detect": {
        "name": "detect",
        "in": "query",
        "schema": {"type": "boolean", "default": True},
        "description": "False when the image is a face crop (also read from the JSON body or the form).",
    }
}
RESPONSES = {
    "NosePosition": {
        "description": "The nose tip of the largest face, and every face found.",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NosePosition"}}},
    }
}
# The three routes are one operation under three paths: each docstring names it (`x-operation:
# Track`) and adds its own summary and description.
OPERATIONS = {
    "Track": image_operation(
        parameter="Detect",
        answer="NosePosition",
        bad_request="No image, bad base64 or JSON, or a bad `detect`.",
        unreadable="An image under 16x16 pixels (code image_too_small).",
    )
}


def parse_detect(value: Any) -> bool:
    """Read the optional `detect` flag (default true)."""
    return flag(value, "detect", default=True, code="invalid_detect")


def track(image: InputImage, endpoint: str) -> Any:
    """Run the tracker on a decoded image and answer its JSON."""
    model = get_registry().get(MODEL)
    detect = parse_detect(request_options().get("detect"))
    start = time.perf_counter()
    result = model(image, detect=detect)
    elapsed_ms = (time.perf_counter() - start) * 1000
    log.debug(
        "%s: %dx%d image, %s, %d face(s), inference %.1f ms",
        endpoint,
        image.width,
        image.height,
        result.get("mode", "no face"),
        len(result.get("faces", ())),
        elapsed_ms,
    )
    prediction = f"{result['x']:.3f},{result['y']:.3f}" if result["found"] else None
    keep_image(image, endpoint=endpoint, model=MODEL, prediction=prediction, confidence=None)
    return jsonify(result)


@bp.post("/image-64")
def image_64():
    """Find the nose tip in a base64 image (the original route; every image format is taken).
    ---
    post:
      summary: Nose tip in a base64 image (original route)
      description: >
        The original form is JSON {"image": base64}; like /api/track it also takes a data URL,
        a multipart upload and raw image bytes. Faces are detected unless "detect" is false.
      x-operation: Track
    """
    return track(load_image(), "image_64")


@bp.post("/image-bin")
def image_bin():
    """Find the nose tip in an uploaded image file (the original route; every image format is taken).
    ---
    post:
      summary: Nose tip in an uploaded image (original route)
      description: >
        The original form is a multipart field `image`; like /api/track it also takes raw image
        bytes and JSON base64. `?detect=0` treats the image as a face crop.
      x-operation: Track
    """
    return track(load_image(), "image_bin")


@bp.post("/api/track")
def track_any():
    """Find the nose tip of every face in an image, in any accepted image format.
    ---
    post:
      summary: Nose tip of every face in an image
      description: >
        Takes every image format of the service (JSON base64 or data URL, multipart, raw image
        bytes, legacy nested arrays). Faces are found with MediaPipe's BlazeFace, cropped,
        and the nose tip regressed on each; largest face first.
      x-operation: Track
    """
    return track(load_image(), "track")


def stats() -> dict:
    """Return the dashboard figures, read from the metrics shared by every worker."""
    figures = route_stats(list(ROUTES))
    rows = [{"path": ROUTES[e][0], "takes": ROUTES[e][1], **figures[e]} for e in ROUTES]
    return {"routes": rows, "total": sum(r["count"] for r in rows)}


@bp.get("/api/track/stats")
def stats_json():
    """Count the tracking requests by route, with mean and p95 latency, across workers.
    ---
    get:
      summary: Tracking request counts and latency (the dashboard's data)
      description: Read from the Prometheus metrics, so every gunicorn worker is counted.
      responses:
        200:
          description: One row per route; latencies in milliseconds, null before the first request.
          content:
            application/json:
              schema: {$ref: '#/components/schemas/TrackingStats'}
    """
    return jsonify(stats())


@bp.get("/dashboard")
def dashboard():
    """Show request counts and latency of the tracking routes."""
    return render_template("dashboard.html", stats=stats())


@bp.get("/track")
def track_page():
    """Show the webcam nose tracker."""
    return render_template("track.html")
