"""schemathesis against /openapi.json: every check, in every phase, on every documented route, finds nothing.

This is `st run --checks all` on the WSGI app itself (schemathesis' engine, as its CLI runs it):
the examples, coverage, fuzzing and stateful phases, with a fixed seed and number of examples so a
run is reproducible. Each distinct failure is listed with the request that shows it.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import events, from_schema

from app import create_app
from tests.conftest import hide_environment

SEED = 15
EXAMPLES = 25
IMAGE_BODIES = ("#/components/requestBodies/Image", "#/components/requestBodies/Upload")
# positive_data_acceptance expects 2xx for a request the schema allows (or 401, 403, 404, 409,
# 429, 5xx). A schema can say how an image is sent (base64 that decodes, arrays of pixel values,
# non-empty bytes) but not whether those bytes decode to an image within the limits: a route that
# reads an image also answers a schema-valid request with 415 (not an image), 413 (over
# MAX_IMAGE_PIXELS) or 422 (an image the model has no answer for: nothing drawn, low certainty).
IMAGE_ANSWERS = ["2xx", "3xx", "401", "403", "404", "409", "413", "415", "422", "429", "5xx"]
# The classifier's GET routes answer every request with 400 and a usage hint, as the original
# service did: that refusal is what they are documented to answer.
HINT_ANSWERS = ["400", "404"]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    folder = tmp_path_factory.mktemp("schemathesis")
    with pytest.MonkeyPatch.context() as mp:
        hide_environment(mp)
        app = create_app(
            {
                "LOG_LEVEL": "ERROR",
                "SAVE_IMAGES": False,
                "IMAGE_DIR": str(folder / "images"),
                "DATABASE_URL": f"sqlite:///{folder / 'images.db'}",
            }
        )
    yield app
    app.extensions["store"].close()


def run_config(document: dict[str, Any]) -> SchemathesisConfig:
    """Every check enabled, a fixed seed and example count, one worker."""
    operations = [op for item in document["paths"].values() for op in item.values() if isinstance(op, dict)]
    image_ops = [
        op["operationId"] for op in operations if op.get("requestBody", {}).get("$ref") in IMAGE_BODIES
    ]
    hint_ops = [op["operationId"] for op in operations if op["operationId"].startswith("classifier.hint_")]
    expect = lambda statuses: {"checks": {"positive_data_acceptance": {"expected-statuses": statuses}}}  # noqa: E731
    return SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "workers": 1,
            "generation": {"max-examples": EXAMPLES, "database": "none"},
            "checks": {"enabled": True},
            "operations": [
                {"include-operation-id": image_ops, **expect(IMAGE_ANSWERS)},
                {"include-operation-id": hint_ops, **expect(HINT_ANSWERS)},
            ],
        }
    )


def rectangular(rows: list) -> list:
    """Make a generated legacy array what its description says: every row as long as the first,
    and one kind of pixel (gray numbers or [b, g, r]) throughout. JSON Schema cannot say that rows
    have one length; a ragged array is a malformed image (400 invalid_array), as the route answers."""
    if not all(isinstance(row, list) and row for row in rows):
        return rows
    width = min(len(row) for row in rows)
    colour = isinstance(rows[0][0], list)

    def pixel(value: Any) -> Any:
        if colour:
            return value if isinstance(value, list) else [value] * 3
        return value[0] if isinstance(value, list) and value else value

    return [[pixel(value) for value in row[:width]] for row in rows]


def map_case(context, case):
    """Shape the legacy arrays of schema-valid cases (negative ones stay as generated)."""
    if case.meta is not None and case.meta.generation.mode.is_positive and isinstance(case.body, dict):
        for field, value in case.body.items():
            if field in ("image", "base64_drawing", "file") and isinstance(value, list):
                case.body[field] = rectangular(value)
    return case


def describe(recorder, case_id: str, failure, code_sample: str) -> str:
    """One failure as a reader needs it: what failed, the request, and the answer."""
    case = recorder.cases[case_id].value
    interaction = recorder.interactions.get(case_id)
    response = interaction.response if interaction else None
    answer = f"{response.status_code} {response.content[:300]!r}" if response is not None else "no answer"
    body = "" if type(case.body).__name__ == "NotSet" else f" body ({case.media_type}): {case.body!r:.300}"
    phase = case.meta.phase.name.value if case.meta is not None else "?"
    return (
        f"{failure.code} {failure.operation}: {failure.title} ({phase} phase)\n  {failure.message}\n"
        f"  {code_sample}{body}\n  -> {answer}"
    )


@pytest.mark.slow  # about 45 s of CPU: in make test, not in make test-fast
def test_schema_and_routes_agree(app):
    document = app.test_client().get("/openapi.json").get_json()
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app, config=run_config(document))
    schema.hook(map_case)
    found: dict[tuple, str] = {}
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            for case_id, checks in event.recorder.checks.items():
                for check in checks:
                    if check.failure_info is None:
                        continue
                    failure = check.failure_info.failure
                    key = (failure.code, failure.operation, failure.message)
                    if key not in found:
                        found[key] = describe(
                            event.recorder, case_id, failure, check.failure_info.code_sample
                        )
        elif isinstance(event, events.NonFatalError | events.FatalError):
            found.setdefault(("error", event.label, str(event.value)), f"{event.label}: {event.value!r}")
    report = "\n\n".join(found.values())
    assert not found, f"{len(found)} distinct failures:\n\n{report}"
