"""The SQLite write lock (store.write_lock): one writer across processes, each process its own descriptor."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import insert, select
from sqlalchemy.exc import OperationalError

from store.schema import make_engine, migrate, schema_version, write_transaction
from store.write_lock import write_lock

ROOT = Path(__file__).resolve().parents[2]

HOLDER = """
import sys
from store.write_lock import write_lock
with write_lock(sys.argv[1]).held():
    print("held", flush=True)
    sys.stdin.read()  # until the test closes our stdin
"""


def test_a_write_waits_for_another_process_and_goes_on_when_it_lets_go(tmp_path):
    database = tmp_path / "images.db"
    engine = make_engine(f"sqlite:///{database}")
    migrate(engine)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(database)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        done = threading.Event()

        def write() -> None:
            with write_transaction(engine) as conn:
                conn.execute(insert(schema_version).values(version=99))
            done.set()

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        # It cannot finish while the other process holds the lock, however long we look.
        assert not done.wait(0.3)
        holder.stdin.close()  # the holder lets go and exits
        assert done.wait(10)
        writer.join(10)
    finally:
        holder.kill()
        holder.wait()
    with engine.connect() as conn:
        assert 99 in conn.execute(select(schema_version.c.version)).scalars().all()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")
def test_a_forked_child_opens_its_own_lock_file_and_waits_for_its_parent(tmp_path):
    lock = write_lock(tmp_path / "images.db")
    with lock.held():
        parent_fd = lock._descriptor()
        pid = os.fork()
        if pid == 0:  # the child: the inherited descriptor would "take" the parent's lock at once
            code = 1
            try:
                fd = lock._descriptor()
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    code = 0 if fd != parent_fd else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_threads_of_one_process_take_turns_and_time_out_as_sqlite_would(tmp_path):
    lock = write_lock(tmp_path / "images.db")
    with lock.held(), pytest.raises(OperationalError, match="database is locked"), lock.held(timeout=0.05):
        pass
    with lock.held(timeout=0.05):  # free again once let go
        pass


def test_one_lock_per_database_file(tmp_path):
    assert write_lock(tmp_path / "a.db") is write_lock(tmp_path / "a.db")
    assert write_lock(tmp_path / "a.db") is not write_lock(tmp_path / "b.db")


def test_the_lock_file_is_opened_read_only_so_one_made_by_another_user_still_works(tmp_path):
    lock = write_lock(tmp_path / "images.db")
    with lock.held():  # flock needs no write access; the tests run as root, so ask the descriptor
        assert fcntl.fcntl(lock._descriptor(), fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY
