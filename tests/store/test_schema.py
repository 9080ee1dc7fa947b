"""The versioned schema: migrated once, even by workers starting together."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import create_engine, event, update

import store.schema as schema_module
from store.records import StoreError
from store.schema import SCHEMA_VERSION, migrate, schema_version, schema_version_of


def test_the_schema_is_versioned_and_migrated_once(store):
    assert schema_version_of(store.engine) == 0
    assert migrate(store.engine) == 0
    assert schema_version_of(store.engine) == SCHEMA_VERSION
    assert migrate(store.engine) == SCHEMA_VERSION  # nothing left to do
    with store.engine.begin() as conn:
        conn.execute(update(schema_version).values(version=SCHEMA_VERSION + 1))
    with pytest.raises(StoreError, match="newer than this code"):
        migrate(store.engine)


def test_workers_starting_together_migrate_once(store):
    engines = [create_engine(store.database_url) for _ in range(4)]
    if store.engine.dialect.name == "sqlite":
        for engine in engines:
            event.listen(engine, "connect", schema_module._sqlite_connect)
            event.listen(engine, "begin", schema_module._sqlite_begin)
    found: list[int] = []
    errors: list[BaseException] = []

    def run(engine) -> None:
        try:
            found.append(migrate(engine))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for engine in engines:
        engine.dispose()
    assert errors == []
    assert sorted(found) == [0] + [SCHEMA_VERSION] * 3
    assert schema_version_of(store.engine) == SCHEMA_VERSION


def test_version_2_keeps_confidence_as_a_fraction_and_drops_old_oversized_exif(store):
    """Rows of an older store: a percentage (97.3) becomes 0.973; an EXIF over the caps goes."""
    from datetime import UTC, datetime

    from sqlalchemy import insert, select

    from store.schema import MIGRATIONS, OLD_EXIF_LIMIT, images

    with store.engine.begin() as conn:
        schema_version.create(conn)
        conn.execute(insert(schema_version).values(version=1))
        MIGRATIONS[1](conn)
        now = datetime.now(UTC)
        base = {
            "created_at": now,
            "endpoint": "predict",
            "file_name": "x.png",
            "byte_size": 1,
            "sha256": "0" * 64,
            "format": "PNG",
            "mime": "image/png",
            "width": 1,
            "height": 1,
            "thumb_status": "done",
            "thumb_attempts": 0,
            "thumb_updated_at": now,
        }
        conn.execute(
            insert(images),
            [
                {**base, "id": "a" * 32, "confidence": 97.3, "exif": {"Make": "cam"}},
                {**base, "id": "b" * 32, "confidence": 0.5, "exif": {"X": "A" * (OLD_EXIF_LIMIT + 10)}},
                {**base, "id": "c" * 32, "confidence": None, "exif": None},
            ],
        )
    assert migrate(store.engine) == 1
    with store.engine.connect() as conn:
        rows = {r.id[0]: r for r in conn.execute(select(images.c.id, images.c.confidence, images.c.exif))}
    assert rows["a"].confidence == pytest.approx(0.973) and rows["a"].exif == {"Make": "cam"}
    assert rows["b"].confidence == 0.5 and set(rows["b"].exif) == {"omitted"}
    assert rows["c"].confidence is None and rows["c"].exif is None


def test_the_switch_to_wal_is_tried_again_while_the_file_is_locked():
    # Switching a new file to WAL takes its lock without SQLite's busy handler: a process that
    # opened the file beside another got "database is locked" at once (a CI run, this module's
    # migrate-once test). The switch is tried again; other errors, and a lock that lasts, are raised.
    import sqlite3

    class Cursor:
        def __init__(self, failures: int, message: str = "database is locked"):
            self.failures, self.message, self.calls = failures, message, 0

        def execute(self, sql: str) -> None:
            self.calls += 1
            if self.calls <= self.failures:
                raise sqlite3.OperationalError(self.message)

    cursor = Cursor(3)
    schema_module._set_wal(cursor)
    assert cursor.calls == 4
    with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
        schema_module._set_wal(Cursor(1, "disk I/O error"))
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        schema_module._set_wal(Cursor(10**6), seconds=0.05)
