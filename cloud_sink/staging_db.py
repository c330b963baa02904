"""The staging database: its layout (tables, version, migration) and :class:`Database`, the one
connection and transaction helper every staging store shares.

``FORMAT`` is stored as ``PRAGMA user_version``. Layout 1 (unversioned) kept packet bytes inside
``packets``; layout 2 keeps them in ``payloads`` until their batch is in the lake, so assigning
and finishing a batch never rewrites packet bytes; layout 3 adds ``schema_current`` (the
fingerprint each model and vehicle sent last), which a layout-2 sink would not keep up to date,
hence the new number. Older layouts are migrated in place, in one transaction; a newer one is
refused.
"""
from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from dcm_base.errors import ServiceError

log = logging.getLogger(__name__)

T = TypeVar("T")

FORMAT = 3

SCHEMA = """
CREATE TABLE IF NOT EXISTS packets (  -- small rows: assigning a batch does not rewrite payloads
    id INTEGER PRIMARY KEY, vehicle TEXT NOT NULL, boot BLOB NOT NULL, seq INTEGER NOT NULL,
    fingerprint BLOB NOT NULL, model TEXT NOT NULL, part TEXT NOT NULL, start_time INTEGER NOT NULL,
    rows INTEGER NOT NULL, size INTEGER NOT NULL, pending INTEGER NOT NULL, batch INTEGER,
    received REAL NOT NULL, UNIQUE (vehicle, boot, seq)
);
CREATE INDEX IF NOT EXISTS packets_pending ON packets (batch) WHERE pending = 1;
CREATE TABLE IF NOT EXISTS payloads (  -- the bytes of pending packets (id = packets.id), appended
    id INTEGER PRIMARY KEY, data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (id INTEGER PRIMARY KEY, done INTEGER NOT NULL DEFAULT 0, files TEXT);
CREATE TABLE IF NOT EXISTS schemas (fingerprint BLOB PRIMARY KEY, json BLOB NOT NULL, first_seen REAL NOT NULL);
CREATE TABLE IF NOT EXISTS schema_use (
    scope TEXT NOT NULL, key TEXT NOT NULL, fingerprint BLOB NOT NULL, first_seen REAL NOT NULL,
    PRIMARY KEY (scope, key, fingerprint)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS schema_use_fingerprint ON schema_use (fingerprint);  -- is a schema used (pruning)
CREATE TABLE IF NOT EXISTS schema_current (  -- the fingerprint each model and vehicle sent last
    scope TEXT NOT NULL, key TEXT NOT NULL, fingerprint BLOB NOT NULL, PRIMARY KEY (scope, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS schema_events (
    id INTEGER PRIMARY KEY, time REAL NOT NULL, scope TEXT NOT NULL, key TEXT NOT NULL,
    old_fingerprint BLOB, new_fingerprint BLOB NOT NULL, detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS streams (
    vehicle TEXT NOT NULL, boot BLOB NOT NULL, top INTEGER NOT NULL, n INTEGER NOT NULL,
    floor INTEGER NOT NULL DEFAULT -1,  -- highest seq whose key was pruned (older than the dedupe window)
    PRIMARY KEY (vehicle, boot)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS latest_state (  -- signals: JSON {"<signal>": [<unix ts>, <value>], ...}
    vehicle TEXT PRIMARY KEY, ts INTEGER NOT NULL, signals TEXT NOT NULL
);
"""


class StagingError(ServiceError):
    """The staging database cannot be opened or written."""


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating or migrating) a staging database: WAL, ``synchronous=FULL``, autocommit
    mode (callers open their own transactions). A new database is created mode 0600 (it holds
    raw vehicle ids); SQLite gives its WAL and shared-memory files the same mode."""
    try:
        _create_private(path)
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    except OSError as exc:
        raise StagingError(f"{path}: {exc.strerror or exc}") from exc
    except sqlite3.Error as exc:
        raise StagingError(f"{path}: {exc}") from exc
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA busy_timeout=10000")
        _open_layout(db, path)
    except sqlite3.Error as exc:
        db.close()
        raise StagingError(f"{path}: {exc}") from exc
    except BaseException:
        db.close()
        raise
    return db


def _create_private(path: Path) -> None:
    """Create ``path`` empty with mode 0600 unless it exists (an existing file keeps its mode)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, 0o600)  # the umask could only have narrowed it; say it explicitly
    finally:
        os.close(fd)


def _open_layout(db: sqlite3.Connection, path: Path) -> None:
    """Create the tables, or bring an older layout to this one, in one transaction either way."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version == 0 and db.execute("SELECT 1 FROM pragma_table_info('packets') WHERE name = 'payload'").fetchone():
        version = 1  # written before the layout was versioned
    if version not in (0, 1, 2, FORMAT):
        raise StagingError(f"{path}: staging layout {version} is newer than this sink's ({FORMAT})")
    db.execute("BEGIN IMMEDIATE")
    try:
        if version == 1:
            db.execute("ALTER TABLE packets ADD COLUMN pending INTEGER NOT NULL DEFAULT 0")
            db.execute("DROP INDEX IF EXISTS packets_pending")
        for statement in SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)
        if version == 1:
            moved = db.execute("INSERT INTO payloads (id, data) SELECT id, payload FROM packets"
                               " WHERE payload IS NOT NULL").rowcount
            db.execute("UPDATE packets SET pending = 1, payload = NULL WHERE payload IS NOT NULL")
            log.info("%s: staging layout 1 migrated to %d (%d pending packets)", path, FORMAT, moved)
        elif version == 2:  # layout 3 only adds schema_current (created above)
            log.info("%s: staging layout 2 migrated to %d", path, FORMAT)
        db.execute(f"PRAGMA user_version = {FORMAT}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


class Database:
    """One staging database connection, shared by the stores (keys, queue, schemas, latest state).

    :meth:`tx` runs a function in one ``BEGIN IMMEDIATE`` transaction; called again from inside
    it (a store's method used by a larger operation), it joins the open transaction, so several
    stores commit together or not at all. Every SQLite error becomes :class:`StagingError`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._conn = connect(path)
        self._depth = 0

    def tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            if self._depth:  # inside a caller's transaction: part of it
                self._depth += 1
                try:
                    return fn(self._conn)
                finally:
                    self._depth -= 1
            self._depth = 1
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                result = fn(self._conn)
                self._conn.execute("COMMIT")
                return result
            except BaseException as exc:
                try:
                    self._conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                if isinstance(exc, sqlite3.Error):
                    raise StagingError(f"{self.path}: {exc}") from exc
                raise
            finally:
                self._depth = 0

    def read(self, sql: str, args: Sequence[object] = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._conn.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise StagingError(f"{self.path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._conn.close()
