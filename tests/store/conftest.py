"""Shared by the image store's tests: a store on each backend (SQLite, PostgreSQL) and small images."""

from __future__ import annotations

import io
import shutil
import uuid
from pathlib import Path

import pytest
from PIL import Image
from prometheus_client import REGISTRY
from sqlalchemy import create_engine, text

from store.images import ImageStore
from store.records import NewImage
from tests.store_servers import start_postgres

EXIF_JPEG = Path(__file__).parents[1] / "data" / "gallery" / "exif_gps.jpg"


def failures(reason: str) -> float:
    """Return the image_store_failures_total count for a reason."""
    return REGISTRY.get_sample_value("image_store_failures_total", {"reason": reason}) or 0.0


def png(width: int = 20, height: int = 10, mode: str = "L", value: int = 128) -> bytes:
    """Encode a flat image as PNG."""
    buf = io.BytesIO()
    Image.new(mode, (width, height), value).save(buf, format="PNG")
    return buf.getvalue()


def new_image(data: bytes | None = None, **fields) -> NewImage:
    """A small PNG to keep, with defaults for the metadata."""
    data = png() if data is None else data
    with Image.open(io.BytesIO(data)) as img:
        width, height, fmt = img.width, img.height, img.format
    values = {"endpoint": "numbers.predict", "model": "numbers", "prediction": "7", "confidence": 0.93}
    values.update(fields)
    return NewImage(data=data, format=fmt, width=width, height=height, **values)


def stored_files(root: Path) -> list[Path]:
    """Every file under the store's folder (temporary ones included; a journal's lock and log not)."""
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not (".journal" in p.parts and (p.name == "lock" or p.suffix == ".log"))
    )


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL cluster on loopback, or a skip with the reason."""
    server = start_postgres()
    if isinstance(server, str):
        pytest.skip(server)
    yield server
    server.stop()
    shutil.rmtree(server.workdir, ignore_errors=True)


BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=[pytest.mark.postgres]),
]


@pytest.fixture(params=BACKENDS)
def database_url(request, tmp_path):
    """A fresh, empty database: a SQLite file, or a new database on the PostgreSQL cluster."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'images.db'}"
        return
    server = request.getfixturevalue("postgres_server")
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    yield server.url.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()


@pytest.fixture
def store(database_url, tmp_path):
    """A store on each backend, closed after the test."""
    s = ImageStore(database_url, tmp_path / "images", thumbnail_size=64)
    yield s
    s.close()


@pytest.fixture
def sqlite_store(tmp_path):
    """A SQLite store, for the faults that need SQLite's own tools."""
    s = ImageStore(f"sqlite:///{tmp_path / 'images.db'}", tmp_path / "images", thumbnail_size=64)
    yield s
    s.close()
