"""The image store: every kept image is one file under IMAGE_DIR plus one database row.

- Files are named by id (`<id[:2]>/<id>.<ext>`), never by a user-supplied name. An id is 32
  lowercase hex digits (a millisecond timestamp, then 80 random bits), so ids sort by time and
  an id can never name a path outside the store.
- A write is all or nothing: the bytes go to a temporary name and are fsync'ed, the row is
  inserted, the file is renamed into place, and the transaction commits; any failure removes
  the file and rolls the row back.
- `save()` writes synchronously (uploads); `submit()` hands the write to one background
  writer thread through a bounded queue, so a prediction never waits for the disk or the
  database, and a failure there is logged and counted, never raised.
- The schema is versioned: table `schema_version` holds one number, and `MIGRATIONS[n]` moves a
  database from version n-1 to n. `migrate()` applies what is missing at start-up, under a
  lock (SQLite BEGIN IMMEDIATE, a PostgreSQL advisory lock) so concurrent workers agree.
"""

from __future__ import annotations

import atexit
import base64
import csv
import hashlib
import io
import logging
import math
import os
import queue
import re
import secrets
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import IO, Any

from PIL import ExifTags, Image, TiffImagePlugin
from prometheus_client import Counter
from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    event,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import StaticPool

log = logging.getLogger(__name__)

FAILURES = Counter(
    "image_store_failures_total",
    "Images the store could not keep or finish, by reason (disk, database, queue_full, "
    "broker_unavailable, thumbnail, unexpected).",
    ["reason"],
)
SAVED = Counter("image_store_saved_total", "Images written to the store, by source endpoint.", ["endpoint"])
THUMBNAILS = Counter("image_store_thumbnails_total", "Thumbnails finished, by outcome.", ["status"])

ID_PATTERN = re.compile(r"\A[0-9a-f]{32}\Z")
MAX_NAME_CHARS = 64
MAX_LABEL_CHARS = 64
PENDING, DONE, FAILED = "pending", "done", "failed"
THUMB_STATUSES = (PENDING, DONE, FAILED)

# The stored file's extension comes from the decoded format, never from the upload's name.
# MPO is what Pillow calls many phones' JPEGs (a JPEG with extra frames): browsers show it as JPEG.
EXT_BY_FORMAT = {
    "PNG": "png",
    "JPEG": "jpg",
    "MPO": "jpg",
    "GIF": "gif",
    "BMP": "bmp",
    "WEBP": "webp",
    "TIFF": "tif",
}
MIME_BY_FORMAT = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "GIF": "image/gif",
    "BMP": "image/bmp",
    "WEBP": "image/webp",
    "TIFF": "image/tiff",
}
EXPORT_CSV = "labels.csv"
EXPORT_COLUMNS = (
    "file",
    "label",
    "id",
    "model",
    "prediction",
    "confidence",
    "endpoint",
    "created_at",
    "format",
    "width",
    "height",
    "sha256",
)
# MakerNote blobs can be large and are opaque; past this size only their length is kept.
MAX_EXIF_BLOB = 64 * 1024

metadata = MetaData()

images = Table(
    "images",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
    Column("endpoint", String(64), nullable=False),
    Column("model", String(64), index=True),
    Column("prediction", Text),
    Column("confidence", Float),
    Column("label", String(MAX_LABEL_CHARS), index=True),
    Column("labelled_at", DateTime(timezone=True)),
    Column("original_name", String(255)),
    Column("file_name", String(64), nullable=False),
    Column("byte_size", Integer, nullable=False),
    Column("sha256", String(64), nullable=False, index=True),
    Column("format", String(16), nullable=False),
    Column("mime", String(64), nullable=False),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("exif", JSON),
    Column("thumb_status", String(8), nullable=False, index=True),
    Column("thumb_error", Text),
    Column("thumb_attempts", Integer, nullable=False),
    Column("thumb_updated_at", DateTime(timezone=True), nullable=False),
)

schema_version = Table("schema_version", metadata, Column("version", Integer, nullable=False))


def _migrate_to_1(conn: Connection) -> None:
    """Create the images table (version 1)."""
    images.create(conn)


# Version n -> the step from n-1 to n. Never edit a released step: append a new one (for
# example ALTER TABLE ... ADD COLUMN), and keep `images` above equal to the newest shape.
MIGRATIONS: dict[int, Callable[[Connection], None]] = {1: _migrate_to_1}
SCHEMA_VERSION = max(MIGRATIONS)
_PG_MIGRATION_LOCK = 0x1A6E5707  # any constant shared by every process of this app


class StoreError(RuntimeError):
    """The store could not do what was asked; `reason` is the metric label (disk, database)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class InvalidImageId(ValueError):
    """A string that is not a store id; such an id names no image."""


@dataclass(frozen=True)
class NewImage:
    """An image to keep, with where it came from and what the model said."""

    data: bytes
    format: str
    width: int
    height: int
    endpoint: str
    model: str | None = None
    prediction: str | None = None
    confidence: float | None = None
    label: str | None = None
    original_name: str | None = None


@dataclass(frozen=True)
class StoredImage:
    """One row of the store."""

    id: str
    created_at: datetime
    endpoint: str
    model: str | None
    prediction: str | None
    confidence: float | None
    label: str | None
    labelled_at: datetime | None
    original_name: str | None
    file_name: str
    byte_size: int
    sha256: str
    format: str
    mime: str
    width: int
    height: int
    exif: dict[str, Any] | None
    thumb_status: str
    thumb_error: str | None
    thumb_attempts: int
    thumb_updated_at: datetime

    @property
    def gps(self) -> dict[str, float | None] | None:
        """Return the position in decimal degrees, when the EXIF has one."""
        return (self.exif or {}).get("GPS")


def validate_id(image_id: str) -> str:
    """Return the id when it has the store's format, else raise InvalidImageId."""
    if not isinstance(image_id, str) or not ID_PATTERN.match(image_id):
        raise InvalidImageId(f"not an image id: {image_id!r}")
    return image_id


def new_id(now: float | None = None) -> str:
    """Return a fresh id: 12 hex digits of milliseconds since the epoch, then 20 random ones."""
    millis = int((time.time() if now is None else now) * 1000)
    return f"{millis:012x}{secrets.token_hex(10)}"


def clean_name(value: Any, what: str) -> str | None:
    """Return a model or endpoint name as stored (1-64 printable characters), or None."""
    if value is None:
        return None
    value = str(value).strip()
    if not value:
        return None
    if len(value) > MAX_NAME_CHARS or not value.isprintable():
        raise ValueError(f"{what} must be at most {MAX_NAME_CHARS} printable characters")
    return value


def extension_for(fmt: str) -> str:
    """Return the file extension for a decoded format ("bin" for one without a known name)."""
    ext = EXT_BY_FORMAT.get(fmt) or fmt.lower()
    return ext if re.fullmatch(r"[a-z0-9]{1,5}", ext) else "bin"


def mime_for(fmt: str) -> str:
    """Return the content type of a decoded format."""
    return MIME_BY_FORMAT.get(fmt) or Image.MIME.get(fmt) or "application/octet-stream"


def clean_label(value: Any) -> str | None:
    """Return a label as stored (trimmed text, 1-64 printable characters), or None to clear it."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError("label must be a string (or a whole number), or null to clear it")
    value = str(value).strip()
    if not value:
        raise ValueError("label must not be empty; send null to clear it")
    if len(value) > MAX_LABEL_CHARS or not value.isprintable():
        raise ValueError(f"label must be at most {MAX_LABEL_CHARS} printable characters")
    return value


def default_database_url(instance_path: str | os.PathLike) -> str:
    """Return the embedded default: a SQLite file in the instance folder."""
    return f"sqlite:///{Path(instance_path).resolve() / 'images.db'}"


def resolve_image_dir(root: str | os.PathLike, value: str | os.PathLike) -> Path:
    """Resolve IMAGE_DIR against the project root."""
    path = Path(value)
    return path if path.is_absolute() else Path(root) / path


# --- the database ---------------------------------------------------------------------------


def make_engine(database_url: str) -> Engine:
    """Create an engine: SQLite in WAL mode with explicit transactions, or any other URL as is."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        connect_args: dict[str, Any] = {}
        if url.get_backend_name() == "postgresql":
            connect_args["connect_timeout"] = 5  # a database that is down must not hang a save
        return create_engine(url, pool_pre_ping=True, connect_args=connect_args)
    memory = url.database in (None, "", ":memory:")
    if not memory:
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        connect_args={"timeout": 30, "check_same_thread": False},
        poolclass=StaticPool if memory else None,
    )
    event.listen(engine, "connect", _sqlite_connect)
    event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_connect(dbapi_conn, _record) -> None:
    # Let SQLAlchemy issue BEGIN itself (pysqlite's implicit transactions skip DDL and
    # cannot take the write lock up front); WAL lets readers run beside the one writer.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    # A write transaction takes the lock at BEGIN, so it waits (busy_timeout) instead of
    # failing at its first write when another process holds the lock.
    immediate = conn.get_execution_options().get("sqlite_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """Open a connection and a write transaction, committed on success, rolled back on error."""
    with engine.connect().execution_options(sqlite_write=True) as conn, conn.begin():
        yield conn


def schema_version_of(engine: Engine) -> int:
    """Return the schema version of a database (0 when empty)."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("schema_version"):
            return 0
        return int(conn.execute(select(schema_version.c.version)).scalar_one_or_none() or 0)


def migrate(engine: Engine) -> int:
    """Bring the database to SCHEMA_VERSION; return the version found before."""
    with write_transaction(engine) as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
        if not inspect(conn).has_table("schema_version"):
            schema_version.create(conn)
            conn.execute(insert(schema_version).values(version=0))
        found = int(conn.execute(select(schema_version.c.version)).scalar_one())
        if found > SCHEMA_VERSION:
            raise StoreError(
                "database",
                f"the database schema is version {found}, newer than this code's {SCHEMA_VERSION}: "
                "upgrade the code (or point DATABASE_URL at another database)",
            )
        for version in range(found + 1, SCHEMA_VERSION + 1):
            MIGRATIONS[version](conn)
            conn.execute(update(schema_version).values(version=version))
            log.info("image store schema migrated to version %d", version)
    return found


# --- EXIF -----------------------------------------------------------------------------------

_IFD_POINTERS = {0x8769, 0x8825, 0xA005}  # Exif, GPS and Interop sub-IFD offsets, not data
_USER_COMMENT = 0x9286


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_exif(data: bytes) -> dict[str, Any] | None:
    """Return an image's EXIF as JSON-safe values by tag name, with GPS in decimal degrees."""
    if data.startswith(PNG_SIGNATURE) and b"eXIf" not in data:
        # Canvas PNGs carry no EXIF, and Pillow would decode every pixel looking for a late chunk.
        return None
    try:
        with Image.open(io.BytesIO(data)) as img:
            exif = img.getexif()
            if not exif:
                return None
            out: dict[str, Any] = {}
            for tag, value in exif.items():
                if tag not in _IFD_POINTERS:
                    out[ExifTags.TAGS.get(tag, f"0x{tag:04x}")] = _exif_value(tag, value)
            for tag, value in exif.get_ifd(ExifTags.IFD.Exif).items():
                out[ExifTags.TAGS.get(tag, f"0x{tag:04x}")] = _exif_value(tag, value)
            try:
                interop = exif.get_ifd(ExifTags.IFD.Interop)
            except KeyError:  # Pillow raises when the Exif IFD has no Interop pointer
                interop = {}
            if interop:
                out["Interop"] = {
                    ExifTags.TAGS.get(t, f"0x{t:04x}"): _exif_value(t, v) for t, v in interop.items()
                }
            gps_ifd = exif.get_ifd(ExifTags.IFD.GPSInfo)
            if gps_ifd:
                out["GPSInfo"] = {
                    ExifTags.GPSTAGS.get(t, f"0x{t:04x}"): _gps_value(t, v) for t, v in gps_ifd.items()
                }
                position = gps_decimal(gps_ifd)
                if position:
                    out["GPS"] = position
            return out or None
    except Exception as exc:  # a broken EXIF block must not stop the image from being kept
        log.warning("unreadable EXIF: %s", exc)
        return {"error": f"unreadable EXIF: {type(exc).__name__}: {exc}"}


def _exif_value(tag: int, value: Any) -> Any:
    if tag == _USER_COMMENT and isinstance(value, bytes):
        return _user_comment(value)
    return jsonable(value)


def _gps_value(tag: int, value: Any) -> Any:
    # GPSVersionID and GPSAltitudeRef are BYTE numbers, which Pillow hands back as bytes.
    if tag in (0, 5) and isinstance(value, bytes):
        return value[0] if tag == 5 and len(value) == 1 else list(value)
    return jsonable(value)


def jsonable(value: Any) -> Any:
    """Turn an EXIF value into JSON: bytes as text where valid, else {"base64": ...}."""
    if isinstance(value, bytes):
        return decode_bytes(value)
    if isinstance(value, str):
        text = value.rstrip("\x00")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates from a broken file
            return decode_bytes(text.encode("utf-8", "surrogateescape"))
        return text
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, TiffImagePlugin.IFDRational | Fraction | float):
        return _finite(value)
    if isinstance(value, tuple | list):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return str(value)


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (ZeroDivisionError, ValueError, TypeError):
        return None
    return number if math.isfinite(number) else None


def decode_bytes(raw: bytes) -> str | dict[str, Any]:
    """Decode bytes as UTF-8 text when they are printable text, else base64."""
    stripped = raw.rstrip(b"\x00")
    try:
        text = stripped.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text and all(c.isprintable() or c in "\t\n\r" for c in text):
        return text
    if len(raw) > MAX_EXIF_BLOB:
        return {"base64": None, "omitted_bytes": len(raw)}
    return {"base64": base64.b64encode(raw).decode("ascii")}


def _user_comment(raw: bytes) -> str | dict[str, Any]:
    # UserComment starts with an 8-byte character code (EXIF 2.3, 4.6.5).
    code, body = raw[:8], raw[8:]
    if code.startswith(b"UNICODE"):
        for encoding in ("utf-16-be", "utf-16-le"):
            try:
                text = body.decode(encoding).rstrip("\x00")
            except UnicodeDecodeError:
                continue
            if text.isprintable():
                return text
        return decode_bytes(body)
    if code.startswith((b"ASCII", b"\x00" * 8)) and len(raw) >= 8:
        decoded = decode_bytes(body)
        return decoded.strip() if isinstance(decoded, str) else decoded
    return decode_bytes(raw)


def gps_decimal(gps: dict[int, Any]) -> dict[str, float | None] | None:
    """Return {"latitude", "longitude", "altitude"} in decimal degrees (and metres) from a GPS IFD."""
    lat = _degrees(gps.get(2), gps.get(1), "S")
    lon = _degrees(gps.get(4), gps.get(3), "W")
    if lat is None or lon is None:
        return None
    altitude = _finite(gps[6]) if 6 in gps else None
    if altitude is not None and gps.get(5) in (1, b"\x01"):
        altitude = -altitude  # AltitudeRef 1: below sea level
    return {"latitude": round(lat, 7), "longitude": round(lon, 7), "altitude": altitude}


def _degrees(dms: Any, ref: Any, negative: str) -> float | None:
    if dms is None:
        return None
    try:
        parts = [float(p) for p in (dms if isinstance(dms, tuple | list) else (dms,))]
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    parts = (parts + [0.0, 0.0])[:3]
    value = parts[0] + parts[1] / 60 + parts[2] / 3600
    if not math.isfinite(value):
        return None
    if isinstance(ref, bytes):
        ref = ref.decode("ascii", "replace")
    if isinstance(ref, str) and ref.strip("\x00 ").upper() == negative:
        value = -value
    return value


# --- the store ------------------------------------------------------------------------------


@dataclass
class _Job:
    image_id: str
    # The upload's own bytes when it has them; else (a legacy pixel array) the InputImage,
    # PNG-encoded in the writer thread so the request does not pay for it. Never the decoded
    # pixels of an upload: 256 queued 400x400 canvases would hold 200 MB of a worker's memory.
    data: bytes | None
    image: Any
    format: str
    width: int
    height: int
    endpoint: str
    model: str | None
    prediction: str | None
    confidence: float | None
    queued_at: float = field(default_factory=time.monotonic)


class ImageStore:
    """Files under `image_dir` plus rows in `database_url`; thread-safe."""

    def __init__(
        self,
        database_url: str,
        image_dir: str | os.PathLike,
        *,
        thumbnail_size: int = 128,
        queue_size: int = 256,
        queue_wait: float = 2.0,
    ):
        self.database_url = database_url
        self.engine = make_engine(database_url)
        self.image_dir = Path(image_dir)
        self.thumbnail_size = thumbnail_size
        # Called with an id once its row is committed; the thumbnail runner hooks in here.
        self.on_saved: Callable[[str], None] | None = None
        self.thumbnails: Any = None
        self._schema_ok = False
        self._schema_lock = threading.Lock()
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=queue_size)
        # How long a request waits for a free slot when the writer is behind (a saturated
        # worker gives its writer thread little CPU) before the image is dropped and counted.
        self.queue_wait = queue_wait
        self._writer: threading.Thread | None = None
        self._writer_lock = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"ImageStore({make_url(self.database_url)!r}, {str(self.image_dir)!r})"

    # schema

    def ensure_schema(self) -> None:
        """Migrate the database once per store; retried on the next use after a failure."""
        if self._schema_ok:
            return
        with self._schema_lock:
            if self._schema_ok:
                return
            try:
                migrate(self.engine)
            except SQLAlchemyError as exc:
                raise StoreError("database", f"cannot prepare the image database: {exc}") from exc
            self._schema_ok = True

    # paths

    def relative_path(self, image_id: str, fmt: str) -> str:
        """Return the stored file's path relative to the store: `<id[:2]>/<id>.<ext>`."""
        validate_id(image_id)
        return f"{image_id[:2]}/{image_id}.{extension_for(fmt)}"

    def file_path(self, record: StoredImage) -> Path:
        """Return the absolute path of a record's original file."""
        validate_id(record.id)
        return self.image_dir / record.file_name

    def thumbnail_path(self, image_id: str) -> Path:
        """Return where an image's thumbnail (JPEG) lives."""
        validate_id(image_id)
        return self.image_dir / "thumbs" / image_id[:2] / f"{image_id}.jpg"

    # writing

    def save(self, new: NewImage, *, image_id: str | None = None) -> str:
        """Write file and row together, or neither; return the id or raise StoreError."""
        image_id = validate_id(image_id) if image_id else new_id()
        self.ensure_schema()
        fmt = str(new.format or "UNKNOWN").upper()[:16]
        relative = self.relative_path(image_id, fmt)
        final = self.image_dir / relative
        temp = final.with_name(f".tmp-{image_id}-{secrets.token_hex(4)}")
        now = datetime.now(UTC)
        exif = read_exif(new.data)
        row = {
            "id": image_id,
            "created_at": now,
            "endpoint": _short(new.endpoint) or "unknown",
            "model": _short(new.model),
            "prediction": None if new.prediction is None else str(new.prediction)[:10_000],
            "confidence": _finite(new.confidence) if new.confidence is not None else None,
            "label": clean_label(new.label),
            "labelled_at": now if new.label is not None else None,
            "original_name": (new.original_name or None) and str(new.original_name)[:255],
            "file_name": relative,
            "byte_size": len(new.data),
            "sha256": hashlib.sha256(new.data).hexdigest(),
            "format": fmt,
            "mime": mime_for(fmt),
            "width": int(new.width),
            "height": int(new.height),
            "exif": exif,
            "thumb_status": PENDING,
            "thumb_error": None,
            "thumb_attempts": 0,
            "thumb_updated_at": now,
        }
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            self._write_file(temp, new.data)
        except OSError as exc:
            _unlink(temp)
            raise StoreError("disk", f"cannot write image file: {exc}") from exc
        try:
            with write_transaction(self.engine) as conn:
                # Parameters apart from the statement: SQLAlchemy compiles it once and reuses it.
                conn.execute(insert(images), row)
                os.replace(temp, final)  # inside the transaction: a failed commit removes it
        except OSError as exc:
            _unlink(temp)
            raise StoreError("disk", f"cannot move image file into place: {exc}") from exc
        except SQLAlchemyError as exc:
            _unlink(temp)
            _unlink(final)
            raise StoreError("database", f"cannot record image: {exc}") from exc
        except BaseException:
            _unlink(temp)
            _unlink(final)
            raise
        SAVED.labels(row["endpoint"]).inc()
        if self.on_saved is not None:
            try:
                self.on_saved(image_id)
            except Exception:  # the image is kept; the retry sweep makes the thumbnail later
                log.exception("could not schedule the thumbnail of %s", image_id)
        return image_id

    @staticmethod
    def _write_file(path: Path, data: bytes) -> None:
        """Write bytes to a new file and flush them to disk."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)

    def submit(
        self,
        image: Any,
        *,
        endpoint: str,
        model: str | None,
        prediction: Any,
        confidence: float | None,
    ) -> str | None:
        """Queue an InputImage for a background write; return its future id, None when dropped."""
        if self._closed:
            return None
        image_id = new_id()
        job = _Job(
            image_id,
            data=image.data,
            image=None if image.data is not None else image,
            format="PNG" if image.format == "ARRAY" else image.format,
            width=image.width,
            height=image.height,
            endpoint=endpoint,
            model=model,
            prediction=_prediction_text(prediction),
            confidence=confidence,
        )
        self._start_writer()
        try:
            self._queue.put(job, timeout=self.queue_wait)  # 0: Full at once when there is no room
        except queue.Full:
            FAILURES.labels("queue_full").inc()
            log.warning(
                "image store queue is full (%d) after waiting %.1f s: image from %s not kept",
                self._queue.maxsize,
                self.queue_wait,
                endpoint,
            )
            return None
        return image_id

    def _start_writer(self) -> None:
        if self._writer is not None:
            return
        with self._writer_lock:
            if self._writer is None and not self._closed:
                self._writer = threading.Thread(
                    target=self._write_loop, name="image-store-writer", daemon=True
                )
                self._writer.start()
                atexit.register(self.close)

    def _write_loop(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                self._write_job(job)
            finally:
                self._queue.task_done()

    def _write_job(self, job: _Job) -> None:
        try:
            new = NewImage(
                data=job.data if job.data is not None else job.image.encoded(),
                format=job.format,
                width=job.width,
                height=job.height,
                endpoint=job.endpoint,
                model=job.model,
                prediction=job.prediction,
                confidence=job.confidence,
            )
            self.save(new, image_id=job.image_id)
        except StoreError as exc:
            FAILURES.labels(exc.reason).inc()
            log.error("image from %s not kept (%s): %s", job.endpoint, exc.reason, exc)
        except Exception:
            FAILURES.labels("unexpected").inc()
            log.exception("image from %s not kept", job.endpoint)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued write is done; True when the queue drained in time."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    @property
    def queued(self) -> int:
        """Return how many writes wait in the queue."""
        return self._queue.unfinished_tasks

    def close(self, timeout: float = 10.0) -> None:
        """Finish queued writes, stop the writer and the thumbnail runner, release connections."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        if self._writer is not None:
            self.flush(timeout)
            with suppress(queue.Full):
                self._queue.put(None, timeout=1)
            self._writer.join(timeout=1)
        if self.thumbnails is not None:
            self.thumbnails.close()
        self.engine.dispose()

    # reading

    def get(self, image_id: str) -> StoredImage | None:
        """Return a record, or None when there is none with this id (or it is not an id)."""
        try:
            validate_id(image_id)
        except InvalidImageId:
            return None
        self.ensure_schema()
        with self.engine.connect() as conn:
            row = conn.execute(select(images).where(images.c.id == image_id)).mappings().first()
        return _record(row) if row else None

    def list(
        self,
        *,
        page: int = 1,
        per_page: int = 24,
        model: str | None = None,
        label: str | None = None,
        labelled: bool | None = None,
        endpoint: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> tuple[list[StoredImage], int]:
        """Return one page of records, newest first, and the total that match the filters."""
        self.ensure_schema()
        conditions = []
        if model is not None:
            conditions.append(images.c.model == model)
        if label is not None:
            conditions.append(images.c.label == label)
        if labelled is True:
            conditions.append(images.c.label.is_not(None))
        elif labelled is False:
            conditions.append(images.c.label.is_(None))
        if endpoint is not None:
            conditions.append(images.c.endpoint == endpoint)
        if since is not None:
            conditions.append(images.c.created_at >= _utc(since))
        if until is not None:
            conditions.append(images.c.created_at < _utc(until))
        query = (
            select(images)
            .where(*conditions)
            .order_by(images.c.created_at.desc(), images.c.id.desc())
            .limit(per_page)
            .offset((page - 1) * per_page)
        )
        with self.engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(images).where(*conditions)).scalar_one()
            rows = conn.execute(query).mappings().all()
        return [_record(r) for r in rows], int(total)

    def pending_count(self) -> int:
        """Return how many thumbnails are pending."""
        self.ensure_schema()
        with self.engine.connect() as conn:
            query = select(func.count()).select_from(images).where(images.c.thumb_status == PENDING)
            return int(conn.execute(query).scalar_one())

    def models(self) -> list[str]:
        """Return the model names that have images, sorted."""
        self.ensure_schema()
        with self.engine.connect() as conn:
            rows = conn.execute(select(images.c.model).where(images.c.model.is_not(None)).distinct())
            return sorted(r[0] for r in rows)

    # changing

    def set_label(self, image_id: str, label: Any) -> StoredImage | None:
        """Record (or clear, with None) the correct answer for an image; None when unknown."""
        label = clean_label(label)
        try:
            validate_id(image_id)
        except InvalidImageId:
            return None
        self.ensure_schema()
        now = datetime.now(UTC) if label is not None else None
        with write_transaction(self.engine) as conn:
            result = conn.execute(
                update(images).where(images.c.id == image_id).values(label=label, labelled_at=now)
            )
        return self.get(image_id) if result.rowcount else None

    def delete(self, image_id: str) -> bool:
        """Delete a record, its file and its thumbnail; False when there was none."""
        record = self.get(image_id)
        if record is None:
            return False
        with write_transaction(self.engine) as conn:
            result = conn.execute(delete(images).where(images.c.id == image_id))
        # The row goes first: a file whose row is gone is invisible, a row without its file is not.
        _unlink(self.file_path(record))
        _unlink(self.thumbnail_path(image_id))
        return bool(result.rowcount)

    def mark_thumbnail(self, image_id: str, status: str, error: str | None = None) -> None:
        """Record a thumbnail's outcome."""
        if status not in THUMB_STATUSES:
            raise ValueError(f"thumbnail status must be one of {THUMB_STATUSES}")
        validate_id(image_id)
        self.ensure_schema()
        with write_transaction(self.engine) as conn:
            conn.execute(
                update(images)
                .where(images.c.id == image_id)
                .values(
                    thumb_status=status,
                    thumb_error=None if error is None else error[:500],
                    thumb_updated_at=datetime.now(UTC),
                )
            )
        if status in (DONE, FAILED):
            THUMBNAILS.labels(status).inc()

    def claim_stale(self, *, older_than: float, max_attempts: int, limit: int = 100) -> list[str]:
        """Claim pending thumbnails untouched for `older_than` seconds, for another try.

        A row is claimed by bumping its attempt count and time only if nobody else has touched
        it since it was read, so several workers sweeping at once never claim the same row twice.
        Rows past `max_attempts` are marked failed.
        """
        self.ensure_schema()
        now = datetime.now(UTC)
        cutoff = now - timedelta(seconds=older_than)
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(images.c.id, images.c.thumb_attempts, images.c.thumb_updated_at)
                .where(images.c.thumb_status == PENDING, images.c.thumb_updated_at < cutoff)
                .order_by(images.c.thumb_updated_at)
                .limit(limit)
            ).all()
        claimed = []
        for image_id, attempts, touched in rows:
            with write_transaction(self.engine) as conn:
                if attempts >= max_attempts:
                    values: dict[str, Any] = {
                        "thumb_status": FAILED,
                        "thumb_error": f"no thumbnail after {attempts} attempts",
                        "thumb_updated_at": now,
                    }
                else:
                    values = {"thumb_attempts": attempts + 1, "thumb_updated_at": now}
                result = conn.execute(
                    update(images)
                    .where(
                        images.c.id == image_id,
                        images.c.thumb_status == PENDING,
                        images.c.thumb_updated_at == touched,
                    )
                    .values(**values)
                )
            if result.rowcount and attempts < max_attempts:
                claimed.append(image_id)
            elif result.rowcount:
                FAILURES.labels("thumbnail").inc()
                THUMBNAILS.labels(FAILED).inc()
                log.error("thumbnail of %s given up after %d attempts", image_id, attempts)
        return claimed

    # export

    def export_zip(self, out: IO[bytes], *, model: str | None = None) -> int:
        """Write the labelled images (of one model, or all) as a zip; return how many.

        The zip holds `labels.csv` (UTF-8, header row, columns EXPORT_COLUMNS; `file` is the
        path inside the zip) and the original files under `images/<id>.<ext>`.
        """
        self.ensure_schema()
        query = select(images).where(images.c.label.is_not(None)).order_by(images.c.created_at, images.c.id)
        if model is not None:
            query = query.where(images.c.model == model)
        with self.engine.connect() as conn:
            records = [_record(r) for r in conn.execute(query).mappings()]
        table = io.StringIO()
        writer = csv.writer(table, lineterminator="\n")
        writer.writerow(EXPORT_COLUMNS)
        count = 0
        with zipfile.ZipFile(out, "w") as archive:
            for rec in records:
                member = f"images/{rec.id}.{extension_for(rec.format)}"
                try:
                    data = self.file_path(rec).read_bytes()
                except OSError as exc:
                    log.error(
                        "export: image %s is in the database but its file is unreadable: %s", rec.id, exc
                    )
                    continue
                # Images are already compressed: storing them is as small and much faster.
                archive.writestr(member, data, compress_type=zipfile.ZIP_STORED)
                writer.writerow(
                    [
                        member,
                        rec.label,
                        rec.id,
                        rec.model or "",
                        rec.prediction or "",
                        "" if rec.confidence is None else rec.confidence,
                        rec.endpoint,
                        rec.created_at.isoformat(),
                        rec.format,
                        rec.width,
                        rec.height,
                        rec.sha256,
                    ]
                )
                count += 1
            archive.writestr(EXPORT_CSV, table.getvalue().encode("utf-8"), compress_type=zipfile.ZIP_DEFLATED)
        return count


def _prediction_text(prediction: Any) -> str | None:
    if prediction is None:
        return None
    if isinstance(prediction, str):
        return prediction
    if isinstance(prediction, list | tuple):
        return " ".join(str(p) for p in prediction)
    return str(prediction)


def _short(value: Any) -> str | None:
    # Names that code passes (endpoint, model) are kept, cut to the column's size.
    if value is None:
        return None
    value = "".join(c for c in str(value).strip() if c.isprintable())
    return value[:MAX_NAME_CHARS] or None


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _record(row: Any) -> StoredImage:
    values = dict(row)
    for key in ("created_at", "labelled_at", "thumb_updated_at"):
        if values[key] is not None:
            values[key] = _utc(values[key])  # SQLite gives naive datetimes back; they are UTC
    return StoredImage(**values)


def _unlink(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("could not remove %s: %s", path, exc)
