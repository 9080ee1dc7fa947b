"""Store ids and names: unique, time-sorted, and never a path outside the store."""

from __future__ import annotations

import pytest

from store.records import InvalidImageId, new_id, validate_id

TRAVERSAL_IDS = [
    "../../etc/passwd",
    "..",
    "../" + "0" * 29,
    "0" * 31 + "/",
    "0" * 30 + "/x",
    "0" * 16 + "\\" + "0" * 15,
    "%2e%2e%2f" + "0" * 23,
    "0" * 31 + "\x00",
    "0" * 31,
    "0" * 33,
    "A" * 32,
    "g" * 32,
    "/etc/passwd",
    "",
]


def test_new_ids_are_unique_hex_and_sort_by_time():
    ids = [new_id() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    assert all(validate_id(i) == i for i in ids)
    assert new_id(now=1_000_000.0) < new_id(now=1_000_000.002)


@pytest.mark.parametrize("bad", TRAVERSAL_IDS)
def test_ids_that_could_name_another_path_are_refused(sqlite_store, bad):
    with pytest.raises(InvalidImageId):
        validate_id(bad)
    with pytest.raises(InvalidImageId):
        sqlite_store.thumbnail_path(bad)
    with pytest.raises(InvalidImageId):
        sqlite_store.relative_path(bad, "PNG")
    assert sqlite_store.get(bad) is None
    assert sqlite_store.set_label(bad, "7") is None
    assert sqlite_store.delete(bad) is False
