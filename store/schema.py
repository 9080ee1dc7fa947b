"""The database: the images table, its versioned migrations, and engines for SQLite or any other URL.

The schema is versioned: table `schema_version` holds one number, and `MIGRATIONS[n]` moves a
database from version n-1 to n. `migrate()` applies what is missing at start-up, under a lock
(SQLite BEGIN IMMEDIATE, a PostgreSQL advisory lock) so concurrent workers agree.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

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
    cast,
    create_engine,
    event,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.pool import StaticPool

from store.records import MAX_LABEL_CHARS, StoreError
from store.write_lock import write_lock

log = logging.getLogger(__name__)

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

# Every column but the EXIF: lists, exports and thumbnails never need it, and it is the large one.
SUMMARY_COLUMNS = tuple(column for column in images.c if column.name != "exif")


def _migrate_to_1(conn: Connection) -> None:
    """Create the images table (version 1)."""
    images.create(conn)


# EXIF JSON longer than this was kept before the caps of store.exif (up to 18 MB a row).
OLD_EXIF_LIMIT = 128 * 1024


def _migrate_to_2(conn: Connection) -> None:
    """Keep confidence in one unit, a fraction (0-1), and drop EXIF kept before the caps (version 2)."""
    # Only a percentage can exceed 1 (early versions kept /api/predict's certainty as it answers it).
    conn.execute(update(images).where(images.c.confidence > 1).values(confidence=images.c.confidence / 100))
    conn.execute(
        update(images)
        .where(func.length(cast(images.c.exif, Text)) > OLD_EXIF_LIMIT)
        .values(exif={"omitted": "EXIF over the limits, kept by an older version and removed"})
    )


# Version n -> the step from n-1 to n. Never edit a released step: append a new one (for
# example ALTER TABLE ... ADD COLUMN), and keep `images` above equal to the newest shape.
MIGRATIONS: dict[int, Callable[[Connection], None]] = {1: _migrate_to_1, 2: _migrate_to_2}
SCHEMA_VERSION = max(MIGRATIONS)
_PG_MIGRATION_LOCK = 0x1A6E5707  # any constant shared by every process of this app


def default_database_url(instance_path: str | os.PathLike) -> str:
    """Return the embedded default: a SQLite file in the instance folder."""
    return f"sqlite:///{Path(instance_path).resolve() / 'images.db'}"


def make_engine(database_url: str) -> Engine:
    """Create an engine: SQLite in WAL mode with explicit transactions, or any other URL as is."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        connect_args: dict[str, Any] = {}
        if url.get_backend_name() == "postgresql":
            connect_args["connect_timeout"] = 5  # a database that is down must not hang a save
        return create_engine(url, pool_pre_ping=True, connect_args=connect_args)
    memory = url.database in (None, "", ":memory:")
    engine = create_engine(
        url,
        connect_args={"timeout": 30, "check_same_thread": False},
        poolclass=StaticPool if memory else None,
    )
    if not memory:
        # The folder (the instance folder, by default) is made when the database is first opened,
        # not when an app is built: an app that never uses its store writes nothing.
        folder = Path(url.database).parent
        event.listen(engine, "do_connect", lambda *args: folder.mkdir(parents=True, exist_ok=True))
    event.listen(engine, "connect", _sqlite_connect)
    event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_connect(dbapi_conn, _record) -> None:
    # Let SQLAlchemy issue BEGIN itself (pysqlite's implicit transactions skip DDL and
    # cannot take the write lock up front); WAL lets readers run beside the one writer.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    # First: switching a new file to WAL takes a lock, which workers starting together contend for.
    cursor.execute("PRAGMA busy_timeout=30000")
    _set_wal(cursor)
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _set_wal(cursor: Any, seconds: float = 10.0) -> None:
    """Switch to WAL, trying again while another connection holds the lock the switch needs.

    Connections opening one file together failed now and then with "database is locked" although
    busy_timeout was set first (a fresh-clone CI run: tests/store/test_schema.py's four engines
    migrating together, and three processes saving): the switch's lock is, as far as seen here, not
    waited for by SQLite's busy handler. Not reproduced on demand.
    """
    deadline = time.monotonic() + seconds
    pause = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            message = str(exc).lower()
            if ("locked" not in message and "busy" not in message) or time.monotonic() > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


def _sqlite_begin(conn: Connection) -> None:
    # A write transaction takes the lock at BEGIN, so it waits (busy_timeout) instead of
    # failing at its first write when another process holds the lock.
    immediate = conn.get_execution_options().get("sqlite_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """Open a connection and a write transaction, committed on success, rolled back on error.

    On a SQLite file the transaction first waits its turn on the file's write lock
    (store.write_lock), so that writers hand over promptly instead of in SQLite's busy sleeps.
    """
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    # Connected first: opening the database makes its folder, where the lock file goes.
    with engine.connect().execution_options(sqlite_write=True) as conn:
        turn = nullcontext() if database in (None, "", ":memory:") else write_lock(database).held()
        with turn, conn.begin():
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
