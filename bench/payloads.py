"""Realistic request payloads for load tests, built from the committed fixtures under tests/data/.

Each endpoint gets a list of `Payload`s: the exact bytes to send and a `check` that says what is
wrong with an answer (None when it is right): the right keys, and for a known input the known
answer. The benchmark (bench.run, through wrk) and the load test (locust.py) send the same bytes.
Nothing here imports Flask or the models, so the module loads in any process.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"

# A nose point may move this much (fraction of the image side) and still be "the same answer".
NOSE_TOLERANCE = 0.02

Check = Callable[[int, Any], "str | None"]


class FixtureMissing(LookupError):
    """The fixtures an endpoint's payloads are built from are not in tests/data/."""


@dataclass(frozen=True)
class Payload:
    """One request: method, path, body and content type, and how to judge its answer."""

    endpoint: str
    method: str
    path: str
    body: bytes | None = None
    content_type: str | None = None
    expected: Any = None
    check: Check = field(default=lambda status, body: None, repr=False, compare=False)
    note: str = ""

    def verdict(self, status: int, body: Any) -> str | None:
        """Return what is wrong with an answer (status and decoded JSON body), or None."""
        return self.check(status, body)


def data_url(data: bytes, mime: str = "image/png") -> str:
    """Wrap bytes in a base64 data URL."""
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def json_body(value: dict) -> tuple[bytes, str]:
    """Encode a JSON request body."""
    return json.dumps(value).encode(), "application/json"


def multipart_body(field_name: str, filename: str, data: bytes, mime: str) -> tuple[bytes, str]:
    """Encode one file as a multipart/form-data body, as a browser would."""
    boundary = f"----vision{secrets.token_hex(12)}"
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="{field_name}"; filename="{filename}"\r\n'
        f"Content-Type: {mime}\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    return head + data + tail, f"multipart/form-data; boundary={boundary}"


def mime_of(path: Path) -> str:
    """Return the image MIME type of a fixture file from its extension."""
    return {
        ".png": "image/png",
        ".jpg": "image/jpeg",
        ".jpeg": "image/jpeg",
        ".bmp": "image/bmp",
        ".gif": "image/gif",
        ".webp": "image/webp",
    }.get(path.suffix.lower(), "application/octet-stream")


def decode_data_url(value: str) -> tuple[bytes, str]:
    """Return the bytes and MIME type of a data URL (or plain base64, taken as PNG)."""
    if value.startswith("data:"):
        head, _, b64 = value.partition(",")
        return base64.b64decode(b64), head[5:].split(";")[0] or "image/png"
    return base64.b64decode(value), "image/png"


def spread(items: list, limit: int | None) -> list:
    """Keep at most `limit` items, taken evenly across the list so every class stays represented."""
    if not limit or len(items) <= limit:
        return list(items)
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


# --- checks ------------------------------------------------------------------------------------


def needs(status: int, body: Any, want_status: int, keys: Iterable[str]) -> str | None:
    """Say what is wrong when the status differs or a key is missing."""
    if status != want_status:
        detail = body.get("error") if isinstance(body, dict) else None
        return f"status {status}, expected {want_status}" + (f": {detail}" if detail else "")
    if not isinstance(body, dict):
        return "answer is not a JSON object"
    missing = [k for k in keys if k not in body]
    return f"missing keys {missing}" if missing else None


def check_equal(key: str, expected: Any, keys: Iterable[str], status: int = 200) -> Check:
    """A check that the answer has `keys` and that body[key] == expected."""

    def check(got_status: int, body: Any) -> str | None:
        problem = needs(got_status, body, status, keys)
        if problem:
            return problem
        if expected is not None and body[key] != expected:
            return f"{key} {body[key]!r}, expected {expected!r}"
        return None

    return check


def check_point(expected: tuple[float, float] | None, tolerance: float = NOSE_TOLERANCE) -> Check:
    """A check that a nose answer has x and y, within `tolerance` of the known point."""

    def check(status: int, body: Any) -> str | None:
        problem = needs(status, body, 200, ("x", "y"))
        if problem:
            return problem
        if expected is None:
            return None
        dx, dy = abs(body["x"] - expected[0]), abs(body["y"] - expected[1])
        if max(dx, dy) > tolerance:
            return f"nose ({body['x']:.3f}, {body['y']:.3f}), expected ({expected[0]:.3f}, {expected[1]:.3f})"
        return None

    return check


# --- fixtures ----------------------------------------------------------------------------------


def read_json(path: Path) -> Any:
    """Read a JSON fixture, or say which one is missing."""
    if not path.is_file():
        raise FixtureMissing(f"{path.relative_to(ROOT)} is missing")
    return json.loads(path.read_text(encoding="utf-8"))


def health(limit: int | None = None) -> list[Payload]:
    """The trivial route: the baseline every endpoint is compared with."""
    return [Payload("/health", "GET", "/health", check=check_equal("status", "ok", ("status",)))]


def system_info(limit: int | None = None) -> list[Payload]:
    """CPU and memory of the machine, in the original string format."""
    return [
        Payload(
            "/api/system_info", "GET", "/api/system_info", check=check_equal("cpu", None, ("memory", "cpu"))
        )
    ]


# The digit page's DrawPad exports its drawing at this size (static/js/numbers.js, exportSize).
PAGE_EXPORT = 140
PREDICT_PAGE = f"/api/predict (page {PAGE_EXPORT} px)"


def predict(limit: int | None = 50) -> list[Payload]:
    """Canvas-like digits (400x400 transparent PNG data URLs) with their true labels."""
    return digits(limit, endpoint="/api/predict")


def predict_page(limit: int | None = 50) -> list[Payload]:
    """The same digits as the canvas page sends them: scaled down to its 140x140 export."""
    return digits(limit, endpoint=PREDICT_PAGE, size=PAGE_EXPORT)


def digits(limit: int | None, *, endpoint: str, size: int | None = None) -> list[Payload]:
    """Digit payloads for /api/predict, at the fixture's size or scaled to `size` pixels."""
    samples = read_json(DATA / "numbers" / "canvas_digits.json")
    payloads = []
    for sample in spread(samples, limit):
        image = sample["image"]
        if size:
            data, mime = decode_data_url(image)
            image = data_url(scaled_png(data, size), mime)
        body, mime = json_body({"image": image})
        payloads.append(
            Payload(
                endpoint,
                "POST",
                "/api/predict",
                body,
                mime,
                expected=sample["label"],
                check=check_equal("prediction", sample["label"], ("prediction", "certainty")),
                note=f"digit {sample['label']}",
            )
        )
    return payloads


def scaled_png(data: bytes, size: int) -> bytes:
    """Scale an image to size x size with area averaging, as a browser's drawImage does, as PNG."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        small = img.resize((size, size), Image.Resampling.BOX)
    out = io.BytesIO()
    small.save(out, "PNG")
    return out.getvalue()


def classifier(limit: int | None = 50) -> list[Payload]:
    """Canvas doodles as the doodle page sends them: {"base64_drawing": <PNG data URL>} -> label."""
    folder = DATA / "doodles"
    index = folder / "labels.csv"
    if not index.is_file():
        raise FixtureMissing(f"{index.relative_to(ROOT)} is missing")
    with open(index, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    out = []
    for row in spread(rows, limit):
        path = folder / row["file"]
        body, mime = json_body({"base64_drawing": data_url(path.read_bytes(), mime_of(path))})
        out.append(
            Payload(
                "/api/classifier",
                "POST",
                "/api/classifier",
                body,
                mime,
                expected=row["label"],
                check=check_equal("label", row["label"], ("label", "confidence", "top")),
                note=path.name,
            )
        )
    return out


def ocr_lines() -> list[tuple[Path, str]]:
    """OCR fixtures with their text: clean renders (lines/) and print/scan-degraded JPEGs (degraded/)."""
    found = []
    for sub in ("lines", "degraded"):
        index = DATA / "ocr" / sub / "labels.tsv"
        if not index.is_file():
            raise FixtureMissing(f"{index.relative_to(ROOT)} is missing")
        for line in index.read_text(encoding="utf-8").splitlines():
            if line.strip() and not line.startswith("#"):
                name, _, text = line.partition("\t")
                found.append((index.parent / name, text.replace("\\n", "\n")))
    return found


def legacy_array(path: Path) -> str:
    """The original OCR client's format: a JSON string of the crop as a nested uint8 (gray) array."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        return json.dumps(np.asarray(image.convert("L")).tolist(), separators=(",", ":"))


def ocr(limit: int | None = 50) -> list[Payload]:
    """Document lines as clients send them: data URL JSON, raw JPEG bytes, and the legacy nested array."""
    out = []
    for i, (path, text) in enumerate(spread(ocr_lines(), limit)):
        if path.suffix.lower() in (".jpg", ".jpeg"):
            body, mime = path.read_bytes(), mime_of(path)  # a scanner posting its file
        elif i == 0:
            body, mime = json_body({"image": legacy_array(path)})
        else:
            body, mime = json_body({"image": data_url(path.read_bytes(), mime_of(path))})
        out.append(
            Payload(
                "/api/ocr",
                "POST",
                "/api/ocr",
                body,
                mime,
                expected=text,
                check=check_equal("text", text, ("text", "digits", "confidence", "characters")),
                note=path.name,
            )
        )
    return out


def faces() -> list[tuple[Path, tuple[float, float], float]]:
    """Face images with their nose point and a tolerance, both as fractions of the image size.

    Webcam-like 320x240 JPEG frames (a face somewhere in the frame) and tight 96x96 face crops.
    The tolerance is a quarter of the inter-ocular distance: a nose found farther off is wrong.
    """
    folder = DATA / "tracking"
    labels = read_json(folder / "labels.json")
    found = []
    for row in labels.get("frames", []) + labels.get("crops", []):
        path = folder / row["file"]
        if "width" in row:
            width, height = row["width"], row["height"]
        else:
            from PIL import Image

            with Image.open(path) as image:
                width, height = image.size
        eyes = [a - b for a, b in zip(row["eye_left_outer"], row["eye_right_outer"], strict=True)]
        iod = (eyes[0] ** 2 + eyes[1] ** 2) ** 0.5
        nose = (row["nose"][0] / width, row["nose"][1] / height)
        found.append((path, nose, 0.25 * iod / max(width, height)))
    return found


def image_64(limit: int | None = 50) -> list[Payload]:
    """The original webcam contract: JSON {"image": <plain base64 of a JPEG/PNG>} -> {"x", "y"}."""
    out = []
    for path, nose, tolerance in spread(faces(), limit):
        body, mime = json_body({"image": base64.b64encode(path.read_bytes()).decode()})
        out.append(
            Payload(
                "/image-64",
                "POST",
                "/image-64",
                body,
                mime,
                expected=nose,
                check=check_point(nose, tolerance),
                note=path.name,
            )
        )
    return out


def image_bin(limit: int | None = 50) -> list[Payload]:
    """The original upload contract: multipart `image` -> {"x", "y"}."""
    out = []
    for path, nose, tolerance in spread(faces(), limit):
        body, mime = multipart_body("image", path.name, path.read_bytes(), mime_of(path))
        out.append(
            Payload(
                "/image-bin",
                "POST",
                "/image-bin",
                body,
                mime,
                expected=nose,
                check=check_point(nose, tolerance),
                note=path.name,
            )
        )
    return out


def gallery_upload(limit: int | None = None) -> list[Payload]:
    """The original gallery contract: POST /images with a multipart `file`; 201 with id and url."""
    path = DATA / "gallery" / "exif_gps.jpg"
    if not path.is_file():
        raise FixtureMissing(f"{path.relative_to(ROOT)} is missing")
    body, mime = multipart_body("file", path.name, path.read_bytes(), mime_of(path))
    return [
        Payload(
            "/images", "POST", "/images", body, mime, check=check_equal("id", None, ("id", "url"), status=201)
        )
    ]


# Endpoint name -> payload builder. The order is the order of the benchmark's table.
BUILDERS: dict[str, Callable[..., list[Payload]]] = {
    "/health": health,
    "/api/predict": predict,
    PREDICT_PAGE: predict_page,
    "/api/classifier": classifier,
    "/api/ocr": ocr,
    "/image-64": image_64,
    "/image-bin": image_bin,
    "/api/system_info": system_info,
    "/images": gallery_upload,
}


def build(
    endpoints: Iterable[str] | None = None, limit: int | None = 50
) -> tuple[dict[str, list[Payload]], dict[str, str]]:
    """Build payloads for these endpoints (all by default); return them and why any are missing."""
    built: dict[str, list[Payload]] = {}
    missing: dict[str, str] = {}
    for name in endpoints or BUILDERS:
        try:
            payloads = BUILDERS[name](limit)
        except FixtureMissing as exc:
            missing[name] = str(exc)
            continue
        if payloads:
            built[name] = payloads
        else:
            missing[name] = "no samples in its fixture"
    return built, missing
