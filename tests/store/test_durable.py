"""Flushing the writer's batch of files to disk (store.durable) and what the store does when it fails."""

from __future__ import annotations

import ctypes
import errno
import os

import pytest

from store import durable
from store.images import ImageStore
from store.records import StoreError
from tests.store.conftest import png, stored_files
from tests.store.test_group_commit import entry


class Calls:
    """Stands in for syncfs and fsync, recording each call; `fail` makes syncfs return -1 (EIO)."""

    def __init__(self, fail: bool = False):
        self.syncfs: list[int] = []
        self.fsync: list[int] = []
        self.fail = fail

    def fake_syncfs(self, fd: int) -> int:
        self.syncfs.append(fd)
        if self.fail:
            ctypes.set_errno(errno.EIO)
            return -1
        return 0


@pytest.fixture
def calls(monkeypatch):
    recorder = Calls()
    real_fsync = os.fsync
    monkeypatch.setattr(durable, "_SYNCFS", recorder.fake_syncfs)

    def fsync(fd: int) -> None:
        recorder.fsync.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return recorder


@pytest.fixture
def files(tmp_path):
    fds = [os.open(tmp_path / f"f{n}", os.O_WRONLY | os.O_CREAT, 0o644) for n in range(3)]
    for fd in fds:
        os.write(fd, b"x" * 100)
    yield fds
    for fd in fds:
        os.close(fd)


def test_a_batch_is_flushed_with_one_call(calls, files):
    durable.sync_files(files)
    assert calls.syncfs == [files[0]] and calls.fsync == []


def test_one_file_and_file_mode_fsync_each(calls, files):
    durable.sync_files(files[:1])
    durable.sync_files(files, durable.FILE)
    assert calls.syncfs == [] and calls.fsync == [files[0], *files]


def test_without_syncfs_every_file_is_fsynced(calls, files, monkeypatch):
    monkeypatch.setattr(durable, "_SYNCFS", None)
    durable.sync_files(files)
    assert calls.fsync == files and not durable.batch_sync_available()


def test_a_failed_syncfs_is_an_os_error_with_its_errno(calls, files):
    calls.fail = True
    with pytest.raises(OSError) as raised:
        durable.sync_files(files)
    assert raised.value.errno == errno.EIO


def test_an_unknown_mode_is_refused(files, tmp_path):
    with pytest.raises(ValueError, match="sync mode"):
        durable.sync_files(files, "never")
    with pytest.raises(ValueError, match="sync mode"):
        ImageStore(f"sqlite:///{tmp_path / 'x.db'}", tmp_path / "x", sync_mode="never")


@pytest.mark.parametrize(
    ("release", "expected"),
    [("6.18.44-fc-v1252", True), ("5.8.0", True), ("5.7.19-generic", False), ("4.19.0", False), ("", False)],
)
def test_syncfs_is_trusted_from_linux_5_8(release, expected):
    # Before 5.8 syncfs returned 0 whatever write-back errors there were.
    assert durable._kernel_at_least(release, 5, 8) is expected


@pytest.mark.skipif(not durable.batch_sync_available(), reason="no syncfs that reports errors here")
def test_the_real_syncfs_flushes_a_batch(files):
    durable.sync_files(files)  # no error on a healthy file system


def test_the_writers_batch_takes_one_flush(sqlite_store, calls):
    batch = [(entry(png(200, 100, value=v)), None) for v in range(5)]
    assert all(isinstance(r, str) for r in sqlite_store.save_entries(batch))
    assert len(calls.syncfs) == 1 and calls.fsync == []
    assert sqlite_store.list()[1] == 5


def test_a_batch_that_cannot_be_flushed_is_kept_one_file_at_a_time(sqlite_store, calls):
    calls.fail = True  # syncfs fails; each image alone is fsynced instead
    batch = [(entry(png(200, 100, value=v)), None) for v in range(4)]
    results = sqlite_store.save_entries(batch)
    assert results == [e.image_id for e, _ in batch]
    assert len(calls.syncfs) == 1 and len(calls.fsync) == 4
    assert sqlite_store.list()[1] == 4


def test_files_that_cannot_be_flushed_leave_no_row_and_no_file(tmp_path, calls, monkeypatch):
    store = ImageStore(f"sqlite:///{tmp_path / 'images.db'}", tmp_path / "images", sync_mode=durable.FILE)
    try:

        def broken(fd: int) -> None:
            raise OSError(errno.EIO, "I/O error")

        monkeypatch.setattr(os, "fsync", broken)
        results = store.save_entries([(entry(png(200, 100, value=v)), None) for v in range(3)])
        assert all(isinstance(r, StoreError) and r.reason == "disk" for r in results)
        assert store.list()[1] == 0
        assert stored_files(tmp_path / "images") == []  # no temporary left, nothing placed
        assert calls.syncfs == []  # "file" mode never uses syncfs
    finally:
        store.close()
