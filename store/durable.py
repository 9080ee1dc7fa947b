"""Flushing a batch of new files to disk with as few flushes as the platform allows.

The writer keeps up to 32 images with one commit, and each file must be on disk before its row
(a row never names a file that a power cut could leave empty). One `fsync` a file cost about
0.06-0.1 ms of CPU here even when the files were all written first (kernel work, and the GIL
taken back after each call while requests run), a third of the writer's whole cost per image;
one `syncfs` for the batch cost 0.007-0.009 ms a file in a queued batch, against 0.05-0.06 for an
`fsync` each (`python -m bench.store`, docs/IMAGE_STORE.md).

`syncfs` flushes the whole file system the files are on, so its wait grows with what other
processes have left unwritten there; only the writer thread waits (never a request), and
`STORE_SYNC=file` goes back to one `fsync` a file. It is used on Linux from 5.8 on, where it
reports write-back errors as `fsync` does (before 5.8 it always returned 0).
"""

from __future__ import annotations

import ctypes
import os
import platform
import re
from collections.abc import Callable, Sequence

BATCH = "batch"
FILE = "file"
MODES = (BATCH, FILE)


def _kernel_at_least(release: str, major: int, minor: int) -> bool:
    found = re.match(r"(\d+)\.(\d+)", release)
    return found is not None and (int(found[1]), int(found[2])) >= (major, minor)


def _load_syncfs() -> Callable[[int], int] | None:
    """Return libc's syncfs when it reports errors (Linux >= 5.8), else None."""
    if platform.system() != "Linux" or not _kernel_at_least(platform.release(), 5, 8):
        return None
    try:
        # The process's own symbols, libc's among them (no ldconfig run, as find_library does).
        syncfs = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):  # pragma: no cover - a libc without syncfs (musl < 1.1.?)
        return None
    syncfs.argtypes = [ctypes.c_int]
    syncfs.restype = ctypes.c_int
    return syncfs


_SYNCFS = _load_syncfs()


def check_mode(mode: str) -> str:
    """Return a sync mode, or raise ValueError when it is not one."""
    if mode not in MODES:
        raise ValueError(f"unknown sync mode {mode!r}: one of {', '.join(MODES)}")
    return mode


def batch_sync_available() -> bool:
    """Return whether one call can flush a batch of files here (syncfs on Linux >= 5.8)."""
    return _SYNCFS is not None


def sync_files(fds: Sequence[int], mode: str = BATCH) -> None:
    """Flush the open files `fds` (all on one file system) to disk; raise OSError when one cannot be.

    With `mode` "batch" and two files or more, one syncfs() where available; else fsync() each.
    The descriptors stay open: the caller closes them.
    """
    if check_mode(mode) == BATCH and len(fds) > 1 and _SYNCFS is not None:
        if _SYNCFS(fds[0]) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs: {os.strerror(err)}")
        return
    for fd in fds:
        os.fsync(fd)
