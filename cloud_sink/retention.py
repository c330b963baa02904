"""Retention: lake partitions, quarantined payloads, schema events and dedupe keys expire by age.

``dcm sink retain --config sink.toml`` runs :func:`retain` once (a timer runs it daily). Every
part is safe beside a live sink, so it needs no downtime:

- **lake**: ``model=*/date=<day>`` partitions whose day is older than ``retention.lake_days`` are
  deleted whole. Partitions inside the window are never touched. A sink writing a late packet
  into an expiring partition at that very moment sees its rename fail and writes the batch again
  (the usual retry, same file names), which recreates that partition's files: the next run
  removes them. Compaction (``dcm sink compact``) of an expiring partition fails the same way.
- **quarantine**: rejects kept longer than ``retention.quarantine_days`` are deleted (note
  first, then payload). A live sink's own count of kept bytes then errs high, so its bound
  still holds; it is exact again at its next start.
- **staging**: dedupe keys of packets already in the lake and received more than ``dedupe_days``
  ago are pruned (the live sink does this hourly too), schema events older than
  ``retention.events_days`` are deleted; both in SQLite transactions beside the sink's own.
Unset ages keep everything. Alerts live in the rule workers' stores and are expired by
:meth:`speed_layer.store.Store.expire_alerts` (the CLI calls it for ``retention.alerts``).
"""
from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

import pyarrow.fs as pafs

from .config import SinkConfig
from .lake import Lake
from .quarantine import Quarantine
from .staging import Staging

log = logging.getLogger(__name__)

DAY_S = 86400.0


def expire_lake(lake: Lake, before: str) -> dict[str, Any]:
    """Delete the ``model=*/date=<day>`` partitions with ``day < before`` (ISO dates)."""
    deleted, kept = [], 0
    for model in lake.fs.get_file_info(pafs.FileSelector(lake.base, allow_not_found=True)):
        if model.type != pafs.FileType.Directory or not model.base_name.startswith("model="):
            continue
        for day in lake.fs.get_file_info(pafs.FileSelector(model.path, allow_not_found=True)):
            if day.type != pafs.FileType.Directory or not day.base_name.startswith("date="):
                continue
            if day.base_name[len("date="):] < before:
                try:
                    lake.fs.delete_dir(day.path)
                except FileNotFoundError:  # another retain got there first
                    continue
                deleted.append(f"{model.base_name}/{day.base_name}")
            else:
                kept += 1
    if deleted:
        log.info("lake %s: %d partitions before %s deleted", lake.root, len(deleted), before)
    return {"before": before, "partitions_deleted": len(deleted), "partitions_kept": kept}


def retain(config: SinkConfig, now: float | None = None) -> dict[str, Any]:
    """Apply ``config``'s retention once; returns what was removed, per part."""
    now = time.time() if now is None else now
    report: dict[str, Any] = {}
    if config.lake_days is not None:
        cutoff = dt.datetime.fromtimestamp(now - config.lake_days * DAY_S, dt.timezone.utc).date().isoformat()
        lake = Lake(config.lake_root, layout=config.layout, buckets=config.buckets, compression=config.compression)
        report["lake"] = expire_lake(lake, cutoff)
    if config.quarantine_days is not None:
        quarantine = Quarantine(config.quarantine_dir, max_files=config.quarantine_max_files,
                                max_bytes=config.quarantine_max_bytes)
        files, size = quarantine.evict_before(now - config.quarantine_days * DAY_S)
        report["quarantine"] = {"files_deleted": files, "bytes_deleted": size, "files_kept": quarantine.files}
    if config.state_path.exists():
        staging = Staging(config.state_path)
        try:
            keys = staging.keys.prune(now - config.dedupe_days * DAY_S)
            events = (staging.schemas.prune_events(now - config.events_days * DAY_S)
                      if config.events_days is not None else 0)
        finally:
            staging.close()
        report["staging"] = {"keys_pruned": keys, "events_deleted": events}
    return report
