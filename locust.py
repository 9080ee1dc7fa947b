"""Load test of every API with realistic payloads, each answer checked (keys and known answer).

Headless, fixed users and duration, against a server you started on this machine:

    locust -f locust.py --headless -u 16 -r 4 -t 60s --host http://127.0.0.1:8000 --only-summary

Payloads come from the committed fixtures under tests/data/ (bench/payloads.py): canvas-like digits,
doodles, OCR line images and face images, with their known answers. At the start each payload is
sent once and kept only if the server answers it right at rest; under load, a different answer
(another digit, a moved nose point) is a failure, so cross-talk between requests shows up.
Locust exits non-zero when any request failed.
"""

from __future__ import annotations

import logging
import random

from bench import payloads
from locust import FastHttpUser, between, events, task

log = logging.getLogger("vision.locust")

# Endpoint -> the payloads the server answered right at rest (filled when the test starts).
PAYLOADS: dict[str, list[payloads.Payload]] = {}


def calibrate(host: str, built: dict[str, list[payloads.Payload]]) -> dict[str, list[payloads.Payload]]:
    """Keep, per endpoint, the payloads the server answers right when it is idle."""
    from bench.server import select_known

    kept: dict[str, list[payloads.Payload]] = {}
    for endpoint, candidates in built.items():
        good, problems = select_known(host.rstrip("/"), candidates)
        if problems:
            log.warning(
                "%s: %d of %d payloads left out: %s", endpoint, len(problems), len(candidates), problems[:3]
            )
        if good:
            kept[endpoint] = good
    return kept


@events.init.add_listener
def on_init(environment, **_kwargs) -> None:
    """Build the payloads from the fixtures and keep those with a known right answer (before the clock starts)."""
    built, missing = payloads.build(limit=40)
    for endpoint, why in missing.items():
        log.warning("%s: not load-tested (%s)", endpoint, why)
    if environment.host:
        try:
            PAYLOADS.update(calibrate(environment.host, built))
            return
        except OSError as exc:  # server not up yet: send everything, failures will say why
            log.warning("cannot reach %s to check the payloads first: %s", environment.host, exc)
    PAYLOADS.update(built)


class VisionUser(FastHttpUser):
    """A mix of people: drawing digits and doodles, webcams tracking noses, OCR scans, dashboards."""

    # People pause between actions; webcam pages send frames back to back (one in flight).
    wait_time = between(0.2, 1.0)

    def call(self, endpoint: str) -> None:
        """Send one of the endpoint's payloads and check the answer."""
        choices = PAYLOADS.get(endpoint)
        if not choices:
            return
        payload = random.choice(choices)
        headers = {"Content-Type": payload.content_type} if payload.content_type else None
        with self.client.request(
            payload.method,
            payload.path,
            data=payload.body,
            headers=headers,
            name=endpoint,
            catch_response=True,
        ) as response:
            try:
                body = response.json()
            except ValueError:
                body = None
            problem = payload.verdict(response.status_code, body)
            if problem:
                response.failure(f"{payload.note or endpoint}: {problem}")
            else:
                response.success()

    @task(10)
    def digits(self) -> None:
        self.call("/api/predict")

    @task(5)
    def doodles(self) -> None:
        self.call("/api/classifier")

    @task(6)
    def webcam_frame(self) -> None:
        self.call("/image-64")

    @task(3)
    def uploaded_face(self) -> None:
        self.call("/image-bin")

    @task(2)
    def ocr_line(self) -> None:
        self.call("/api/ocr")

    @task(3)
    def system_panel(self) -> None:
        self.call("/api/system_info")

    @task(1)
    def gallery_upload(self) -> None:
        self.call("/images")
