"""The journal: records appended before the answer, segments rotated and deleted, recovery of ended processes."""

from __future__ import annotations

import gc
import os
import time

import numpy as np

from store.journal import EMPTY_BYTES, Entry, Journal, encode
from store.records import new_id


def entry(n: int = 0, size: int = 100, pixels: bool = False) -> Entry:
    data = None if pixels else bytes([n % 256]) * size
    array = np.full((3, 5), n % 256, np.uint8) if pixels else None
    return Entry(new_id(), time.time(), "predict", "numbers", str(n), 0.5, "PNG", 5, 3, data, array)


def end_process(journal: Journal) -> None:
    """Do what the kernel does when a journal's process dies: close its descriptors (the lock goes)."""
    for fd in journal._fds:
        os.close(fd)
    journal._fds.clear()


def test_records_come_back_as_written_and_segments_rotate_and_go(tmp_path):
    journal = Journal(tmp_path, segment_bytes=1000)
    tickets = [journal.append(entry(n)) for n in range(30)]
    assert len({t.segment for t in tickets}) > 3
    assert journal.read(tickets[7]).data == entry(7).data and journal.read(tickets[7]).prediction == "7"
    for ticket in tickets[:-1]:
        journal.done(ticket)
    logs = sorted(journal.folder.glob("*.log"))
    assert [p.name for p in logs] == [f"{tickets[-1].segment:06d}.log"]  # finished segments deleted
    assert journal.pending == 1
    journal.done(tickets[-1])
    journal.close()
    assert not journal.folder.exists()  # nothing left to keep: the folder goes


def test_a_legacy_array_is_journalled_as_pixels(tmp_path):
    journal = Journal(tmp_path)
    kept = journal.read(journal.append(entry(9, pixels=True)))
    assert kept.data is None and np.array_equal(kept.pixels, np.full((3, 5), 9, np.uint8))
    assert kept.encoded().startswith(b"\x89PNG")


def test_the_current_segment_is_emptied_once_everything_in_it_is_kept(tmp_path):
    journal = Journal(tmp_path)
    tickets = [journal.append(entry(n, size=4096)) for n in range(EMPTY_BYTES // 4096 + 2)]
    for ticket in tickets:
        journal.done(ticket)
    (segment,) = journal.folder.glob("*.log")
    assert segment.stat().st_size == 0
    journal.append(entry(1))
    assert 0 < segment.stat().st_size < 1000


def test_recovery_keeps_what_an_ended_process_left_but_not_what_it_dropped(tmp_path):
    dead = Journal(tmp_path)
    kept_ids = [e.image_id for e in (entry(1), entry(2))]
    for n, image_id in enumerate(kept_ids):
        dead.append(Entry(image_id, time.time(), "ocr", "ocr", str(n), None, "PNG", 1, 1, b"x"))
    dropped = entry(3)
    dead.append(dropped)
    dead.drop(dropped.image_id)
    # A record cut short by the process's death: never answered, never kept, no harm to the rest.
    with open(next(dead.folder.glob("*.log")), "ab") as fh:
        fh.write(encode(entry(4))[:40])
    (dead.folder / ".tmp-half-written").write_bytes(b"junk")

    alive = Journal(tmp_path)
    seen: list[str] = []
    assert alive.recover(lambda e: seen.append(e.image_id) or True) == 0  # its owner still lives
    end_process(dead)
    assert alive.recover(lambda e: seen.append(e.image_id) or True) == 2
    assert seen == kept_ids
    assert not dead.folder.exists()  # with its temporaries


def test_an_uncollected_journal_releases_its_lock_when_collected(tmp_path):
    journal = Journal(tmp_path)
    journal.append(entry(1))
    folder = journal.folder
    del journal
    gc.collect()
    assert Journal(tmp_path).recover(lambda e: True) == 1
    assert not folder.exists()
