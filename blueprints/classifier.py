"""The classifier endpoints (being built; until the model is served they answer 503)."""

from flask import Blueprint

from models.registry import get_registry

bp = Blueprint("classifier", __name__)


@bp.post("/api/classifier")
def predict():
    """Answer with the model's prediction (503 while the model is not loaded)."""
    get_registry().get("doodles")
    return {}
