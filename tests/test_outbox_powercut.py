"""Outbox power-cut semantics: SQLite WAL with synchronous=FULL, and copies of the database files
taken at the fault points inside a write (what a power cut would leave on disk, the shared-memory
index lost) reopen intact with exactly the committed packets."""
from __future__ import annotations

import shutil
import sqlite3

import pytest

import faultpoints
from gateway.outbox import Outbox


@pytest.fixture(autouse=True)
def _clean_hook():
    yield
    faultpoints.reset()


def _copy(src, dst, *, wal_bytes: int | None = None):
    dst.mkdir()
    shutil.copyfile(src, dst / src.name)
    wal = src.with_name(src.name + "-wal")
    if wal.exists():
        data = wal.read_bytes()
        (dst / wal.name).write_bytes(data if wal_bytes is None else data[:wal_bytes])
    return dst / src.name  # no -shm: it lives in memory and is rebuilt on open


def _reopen(path) -> list[bytes]:
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()
    box = Outbox(path)
    items = [i.payload for i in box.peek(1000)]
    box.close()
    return items


def test_the_outbox_is_wal_with_full_sync(tmp_path):
    box = Outbox(tmp_path / "o.sqlite")
    assert box._db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert box._db.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL: fsync at every commit
    box.close()


@pytest.mark.parametrize("point, expected", [("outbox.put.before_commit", 2), ("outbox.put.committed", 3)])
def test_a_copy_taken_inside_put_holds_exactly_the_committed_packets(tmp_path, point, expected):
    path = tmp_path / "o.sqlite"
    box = Outbox(path)
    copies = []

    def hook(name):
        if name == point and box.stats.stored == 2 and not copies:  # during the 3rd put
            copies.append(_copy(path, tmp_path / "cut"))

    faultpoints.set_hook(hook)
    for i in range(4):
        box.put("t", b"packet-%d" % i)
    box.close()
    assert _reopen(copies[0]) == [b"packet-%d" % i for i in range(expected)]


@pytest.mark.parametrize("point, left", [("outbox.remove.before_commit", 4), ("outbox.remove.committed", 2)])
def test_a_copy_taken_inside_remove_holds_what_was_not_acknowledged(tmp_path, point, left):
    path = tmp_path / "o.sqlite"
    box = Outbox(path)
    for i in range(4):
        box.put("t", b"packet-%d" % i)
    copies = []
    faultpoints.set_hook(lambda name: copies.append(_copy(path, tmp_path / "cut")) if name == point else None)
    box.remove([i.id for i in box.peek(2)])
    box.close()
    assert _reopen(copies[0]) == [b"packet-%d" % i for i in range(4 - left, 4)]


def test_a_torn_write_ahead_log_reopens_with_a_prefix_of_the_commits(tmp_path):
    path = tmp_path / "o.sqlite"
    box = Outbox(path)
    for i in range(20):
        box.put("t", b"packet-%d" % i * 50)
    wal_size = path.with_name(path.name + "-wal").stat().st_size
    for k, cut in enumerate((wal_size // 3, wal_size // 2, wal_size - 100)):
        items = _reopen(_copy(path, tmp_path / f"torn{k}", wal_bytes=cut))
        assert items == [b"packet-%d" % i * 50 for i in range(len(items))]  # older commits intact, in order
    box.close()
