"""The image store's endpoints (being built)."""

from flask import Blueprint

bp = Blueprint("gallery", __name__)


def init_app(app) -> None:
    """Set up the image store (not built yet)."""
