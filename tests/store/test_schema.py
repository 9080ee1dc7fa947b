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
