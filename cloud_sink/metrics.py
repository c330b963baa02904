"""The sink's counters (:class:`SinkStats`) and what ``/metrics`` reports (:class:`SinkMetrics`)."""
from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from minute_packet import Schema

    from .events import EventOutbox
    from .http import Sample
    from .intake import MqttIntake
    from .quarantine import Quarantine
    from .registry import SchemaRegistry
    from .staging import Staging
    from .writer import ValidatedCache


@dataclasses.dataclass
class SinkStats:
    packets_in: int = 0
    packets_staged: int = 0
    duplicates: int = 0
    packets_written: int = 0  # to the lake
    rows_written: int = 0
    files_written: int = 0
    batches: int = 0
    schemas_learned: int = 0
    events_dropped: int = 0  # schema events the broker client refused (still stored in staging)
    staging_errors: int = 0
    write_errors: int = 0
    last_lag_s: float = 0.0  # receive time - packet end time, of the last staged packet
    out_of_range: collections.Counter = dataclasses.field(default_factory=collections.Counter)


class SinkMetrics:
    """Reads the sink's parts for ``/metrics``; the gap count (a sum over every stream) is cached."""

    def __init__(self, *, stats: SinkStats, intake: MqttIntake, staging: Staging, schemas: Mapping[bytes, Schema],
                 registry: SchemaRegistry, cache: ValidatedCache, quarantine: Quarantine,
                 outbox: EventOutbox) -> None:
        self.stats, self.intake, self.staging, self.schemas = stats, intake, staging, schemas
        self.registry, self.cache, self.quarantine, self.outbox = registry, cache, quarantine, outbox
        self._gaps_cache: tuple[float, int] = (0.0, 0)

    def gap_count(self, max_age_s: float = 5.0) -> int:
        """Missing seqs below each (vehicle, boot)'s highest seq (one row per vehicle and boot, so
        the query is cheap; still cached for ``max_age_s``)."""
        at, value = self._gaps_cache
        if time.monotonic() - at > max_age_s:
            value = self.staging.keys.missing_count()
            self._gaps_cache = (time.monotonic(), value)
        return value

    def samples(self) -> list[Sample]:
        s, c = self.stats, "counter"
        backlog = self.staging.queue.backlog(self.schemas)
        out: list[Sample] = [
            ("dcm_sink_broker_connected", "gauge", "1 while connected to the broker", {},
             float(self.intake.connected.is_set())),
            ("dcm_sink_packets_in_total", c, "packets received on telemetry topics", {}, s.packets_in),
            ("dcm_sink_packets_staged_total", c, "new packets committed to staging", {}, s.packets_staged),
            ("dcm_sink_packets_written_total", c, "packets written to the lake", {}, s.packets_written),
            ("dcm_sink_rows_written_total", c, "rows written to the lake", {}, s.rows_written),
            ("dcm_sink_duplicates_total", c, "duplicate deliveries dropped", {}, s.duplicates),
            ("dcm_sink_files_written_total", c, "Parquet files written", {}, s.files_written),
            ("dcm_sink_staging_errors_total", c, "failed staging commits (retried, not acked)", {},
             s.staging_errors),
            ("dcm_sink_write_errors_total", c, "failed lake writes (batch retried)", {}, s.write_errors),
            ("dcm_sink_schemas_learned_total", c, "schemas learned", {}, s.schemas_learned),
            ("dcm_sink_schemas_pruned_total", c, "unused schemas dropped to keep the registry bounded", {},
             self.registry.pruned),
            ("dcm_sink_schemas_refused_total", c, "new schemas refused: the registry is full of used ones", {},
             self.registry.refused),
            ("dcm_sink_schemas", "gauge", "schemas held", {}, len(self.registry.schemas)),
            ("dcm_sink_schema_bytes", "gauge", "JSON bytes of the schemas held", {}, self.registry.bytes),
            ("dcm_sink_schema_events_total", c, "schema new/change events", {}, self.outbox.added),
            ("dcm_sink_schema_events_unpublished_total", c, "schema events not published", {},
             s.events_dropped + self.outbox.dropped),
            ("dcm_sink_schema_cache_evictions_total", c, "model/vehicle schema states evicted from memory"
             " (read back from staging when seen again)", {}, self.registry.evicted),
            ("dcm_sink_validated_cache_evictions_total", c, "validated packets evicted before writing", {},
             self.cache.evicted),
            ("dcm_sink_quarantine_unsaved_total", c, "rejects counted but not kept (too large, or the write failed)",
             {}, self.quarantine.dropped),
            ("dcm_sink_quarantine_write_errors_total", c, "quarantine writes that failed (full disk, I/O error)", {},
             self.quarantine.write_errors),
            ("dcm_sink_quarantine_evicted_total", c, "kept rejects deleted, oldest first, to make room", {},
             self.quarantine.evicted),
            ("dcm_sink_quarantine_evicted_bytes_total", c, "bytes of kept rejects deleted to make room", {},
             self.quarantine.evicted_bytes),
            ("dcm_sink_quarantine_files", "gauge", "rejects kept in the quarantine", {}, self.quarantine.files),
            ("dcm_sink_quarantine_bytes", "gauge", "bytes kept in the quarantine (payloads and notes)", {},
             self.quarantine.bytes),
            ("dcm_sink_staging_backlog_packets", "gauge", "staged packets waiting for the lake", {}, backlog.packets),
            ("dcm_sink_staging_backlog_bytes", "gauge", "staged bytes waiting for the lake", {}, backlog.bytes),
            ("dcm_sink_parked_packets", "gauge", "staged packets of unknown schema", {},
             self.staging.queue.pending() - backlog.packets),
            ("dcm_sink_lag_seconds", "gauge", "age of the oldest packet waiting for the lake", {},
             time.time() - backlog.oldest if backlog.oldest else 0.0),
            ("dcm_sink_arrival_lag_seconds", "gauge", "receive time minus end time of the last packet", {},
             s.last_lag_s),
            ("dcm_sink_gap_packets", "gauge", "seqs missing per vehicle and boot, summed (this worker's view)", {},
             self.gap_count()),
        ]
        for reason, n in sorted(self.quarantine.by_reason.items()):  # intake and write-time rejects
            out.append(("dcm_sink_rejects_total", c, "rejected payloads by reason", {"reason": reason}, n))
        for column, n in sorted(s.out_of_range.items()):
            out.append(("dcm_sink_out_of_range_total", c, "values outside the DBC range, by column",
                        {"column": column}, n))
        return out
