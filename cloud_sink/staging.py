"""The sink's durable staging area and state (SQLite, WAL): one database, a few small stores.

Every accepted packet is inserted here, keyed by (vehicle, boot id, seq),
*before* the broker gets its PUBACK; a second delivery of the same key is a
duplicate and is dropped in the same transaction. The lake writer then moves
staged packets into Parquet in numbered batches: a batch is assigned in one
transaction, its files are written under names derived from the worker id
and batch number (so redoing a batch after a crash overwrites, never
duplicates), and the batch is marked done. A staged packet whose schema is
not known yet simply waits here ("parked") until the schema arrives.

The stores share one connection and one transaction helper
(:class:`~cloud_sink.staging_db.Database`, whose layout and migration live
there too); an operation that spans stores runs them in one transaction:

- ``keys`` (:mod:`~cloud_sink.staging_keys`): dedupe keys and per-stream seq counters;
- ``queue`` (:mod:`~cloud_sink.staging_queue`): bytes of pending packets and the batches;
- ``schemas`` (:mod:`~cloud_sink.staging_schemas`): learned schemas, their use, change events;
- ``latest`` (:mod:`~cloud_sink.staging_latest`): the latest-state table.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import faultpoints

from .staging_db import Database, StagingError
from .staging_keys import DUPLICATE, NEW, STALE, KeyStore, NewPacket
from .staging_latest import Latest, LatestStore
from .staging_queue import Backlog, PacketQueue, StagedPacket
from .staging_schemas import SchemaStore

__all__ = ["DUPLICATE", "NEW", "STALE", "Backlog", "NewPacket", "StagedPacket", "Staging", "StagingError"]


class Staging:
    """The staging database and its stores (thread-safe)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StagingError(f"{self.path}: {exc}") from exc
        self.db = Database(self.path)
        self.keys = KeyStore(self.db)
        self.queue = PacketQueue(self.db)
        self.schemas = SchemaStore(self.db)
        self.latest = LatestStore(self.db)

    def stage(self, packets: Sequence[NewPacket]) -> list[str]:
        """Durably insert packets (keys and bytes in one transaction); returns per packet ``NEW``,
        ``DUPLICATE`` or ``STALE`` (see :meth:`KeyStore.admit`)."""

        def run(_c) -> list[str]:
            status, ids = self.keys.admit(packets)
            self.queue.put(ids, [p.payload for p, s in zip(packets, status) if s == NEW])
            faultpoints.hit("sink.stage.before_commit")
            return status

        status = self.db.tx(run)
        faultpoints.hit("sink.stage.committed")  # durable, not yet acknowledged
        return status

    def finish_batch(self, batch: int, files: Sequence[str], latest: Latest) -> None:
        """Mark a batch written (its payloads dropped, keys kept) and merge its latest state, in
        one transaction."""

        def run(_c) -> None:
            self.queue.finish(batch, files)
            self.latest.merge(latest)
            faultpoints.hit("sink.finish.before_commit")

        self.db.tx(run)
        faultpoints.hit("sink.finish.committed")

    def close(self) -> None:
        self.db.close()
