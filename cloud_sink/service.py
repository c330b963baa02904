"""The cloud sink service: MQTT → validate → durable staging (+ack) → Parquet lake.

Named tasks in one TaskGroup: ``intake`` validates and stages messages in
group commits and acknowledges them after the commit; ``lake-writer`` cuts a
batch from staging when enough bytes wait (``roll_bytes``), when the oldest
waiting packet is ``roll_interval_s`` old, or when a newly learned schema
unparks packets, and once more on shutdown; ``http`` serves ``/metrics``
and the latest state when configured.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import logging
import time
from pathlib import Path

import pyarrow as pa

import dbc as dbc_files
from dcm_base.backoff import Backoff
from minute_packet import PacketDecodeError, Schema, SchemaError, TopicError, schema_from_dbc
from minute_packet.codec import PacketInfo, validate
from minute_packet.schema import SCHEMA_VERSIONS

from .config import SinkConfig
from .http import Sample, serve
from .intake import Incoming, MqttIntake
from .lake import Lake, LakeError, mask_vehicle
from .quarantine import Quarantine
from .registry import SchemaRegistry
from .staging import NEW, STALE, NewPacket, Staging, StagingError
from .writer import ValidatedCache, LakeWriter

__all__ = ["Sink", "SinkConfig", "SinkStats"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class SinkStats:
    packets_in: int = 0
    packets_staged: int = 0
    duplicates: int = 0
    packets_written: int = 0
    rows_written: int = 0
    files_written: int = 0
    batches: int = 0
    schemas_learned: int = 0
    schema_events: int = 0
    events_dropped: int = 0  # schema events not published (broker unreachable); still stored
    staging_errors: int = 0
    write_errors: int = 0
    last_lag_s: float = 0.0  # receive time - packet end time, of the last staged packet
    out_of_range: collections.Counter = dataclasses.field(default_factory=collections.Counter)


class Sink:
    def __init__(self, config: SinkConfig) -> None:
        self.config = config
        self.stats = SinkStats()
        self.staging = Staging(config.state_path)
        self.quarantine = Quarantine(config.quarantine_dir)
        self.lake = Lake(config.lake_root, layout=config.layout, buckets=config.buckets,
                         compression=config.compression)
        self.registry = SchemaRegistry(self.staging, self._publish_event)
        self.schemas = self.registry.schemas
        for path in config.dbc_paths:
            db = dbc_files.load(path)
            for version in SCHEMA_VERSIONS:  # packets of older gateways (schema v1) decode too
                schema = schema_from_dbc(db, source=Path(path).name, version=version)
                self._learn(schema, schema.to_json())
        self.cache = ValidatedCache(config.validated_cache)
        self._masks: dict[str, str] = {}
        self.writer = LakeWriter(self.lake, self.staging, self.quarantine, worker_id=config.worker,
                                 schemas=self.schemas, mask=self.mask, cache=self.cache,
                                 chunk_packets=config.chunk_packets,
                                 row_group_rows=config.row_group_rows)
        self._stop = asyncio.Event()
        self._flush_now = asyncio.Event()
        self.http_port: int | None = None
        self._gaps_cache: tuple[float, int] = (0.0, 0)
        self._next_prune = 0.0
        self._backoff = Backoff(1.0, 60.0)  # lake writes
        self._loop: asyncio.AbstractEventLoop | None = None
        self.topics = config.topics
        telemetry = self.topics.all_vehicles("telemetry")
        if config.share_group:
            telemetry = self.topics.shared(config.share_group, telemetry)
        self.intake = MqttIntake(config.broker, client_id=config.client_id, topics=[telemetry, self.topics.all_schemas],
                                 queue_size=config.queue_size, ca_file=config.ca_file)

    def mask(self, vehicle_id: str) -> str:
        masked = self._masks.get(vehicle_id)
        if masked is None:
            if len(self._masks) >= 100_000:
                self._masks.clear()
            masked = self._masks[vehicle_id] = mask_vehicle(self.config.vehicle_secret, vehicle_id)
        return masked

    def _learn(self, schema: Schema, payload: bytes) -> None:
        if self.registry.learn(schema, payload):
            self.stats.schemas_learned += 1

    def _publish_event(self, event: dict) -> None:
        self.stats.schema_events += 1
        if not self.intake.publish(self.topics.schema_events, json.dumps(event).encode()):
            self.stats.events_dropped += 1

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.intake.start()
        try:
            async with asyncio.TaskGroup() as tg:
                intake = tg.create_task(self._intake_loop(), name="intake")
                writer = tg.create_task(self._writer_loop(), name="lake-writer")
                if self.config.http_host:
                    tg.create_task(serve(self, self.config.http_host, self.config.http_port, self._stop,
                                         self._bound, self.config.http_token), name="http")
                await self._stop.wait()
                intake.cancel()
                self._flush_now.set()
                await writer
        finally:
            self.intake.stop()
            await asyncio.to_thread(self.flush)  # clean shutdown: everything staged goes to the lake
            self.staging.close()

    def _request_flush(self) -> None:
        """Wake the lake writer; safe from the intake thread."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._flush_now.set)

    def _bound(self, port: int) -> None:
        self.http_port = port

    # -- intake ---------------------------------------------------------------------------------

    async def _intake_loop(self) -> None:
        q = self.intake.queue
        while True:
            batch = [await q.get()]
            while len(batch) < self.config.intake_batch and not q.empty():
                batch.append(q.get_nowait())
            backoff = Backoff(0.5, 30.0)
            while True:
                work = asyncio.ensure_future(asyncio.to_thread(self.ingest, batch))
                try:
                    await asyncio.shield(work)
                    break
                except asyncio.CancelledError:  # shutting down: let the commit finish before staging closes
                    try:
                        await work
                    except StagingError:
                        raise asyncio.CancelledError() from None  # not acked: the broker redelivers
                    self._ack(batch)
                    raise
                except StagingError as exc:  # e.g. disk full: nothing acked, retry the same messages
                    self.stats.staging_errors += 1
                    delay = backoff.next()
                    log.error("staging failed, retrying in %.1f s: %s", delay, exc)
                    await asyncio.sleep(delay)
            self._ack(batch)

    def _ack(self, batch: list[Incoming]) -> None:
        for m in batch:  # only now is every packet of the batch safe on disk
            self.intake.ack(m.mid, m.qos)

    def ingest(self, messages: list[Incoming]) -> None:
        """Validate, dedupe and durably stage messages (one transaction); rejects go to quarantine."""
        accepted = [a for a in (self._accept(m) for m in messages) if a is not None]
        if not accepted:
            return
        outcome = self.staging.stage([n for n, _ in accepted])
        uses = []
        for (item, packet), status in zip(accepted, outcome):
            if status == NEW:
                self.stats.packets_staged += 1
                self.cache.put(packet)
                uses.append((item.model, self.mask(item.vehicle), item.fingerprint))
            elif status == STALE:  # older than the dedupe window: kept aside, not risked as a duplicate
                self.quarantine.put("older_than_dedupe_window", self.topics.telemetry(item.vehicle),
                                    item.payload, f"seq {item.seq} is at or below the pruned floor")
            else:
                self.stats.duplicates += 1
        if uses:
            self.registry.observe(uses)

    def _accept(self, m: Incoming) -> tuple[NewPacket, PacketInfo] | None:
        try:
            topic = self.topics.parse(m.topic)
        except TopicError as exc:
            self._reject("bad_topic", m, str(exc))
            return None
        if topic.kind == "schema":
            try:
                schema = Schema.from_json(m.payload)
            except SchemaError as exc:
                self._reject("bad_schema", m, str(exc))
                return None
            if schema.fingerprint != topic.fingerprint:
                self._reject("schema_fingerprint_mismatch", m, "topic and content differ")
                return None
            self._learn(schema, m.payload)
            self._request_flush()  # parked packets may now be writable
            return None
        self.stats.packets_in += 1
        try:  # every check decode makes, without building the value matrices (the writer does)
            packet = validate(m.payload)
        except PacketDecodeError as exc:
            self._reject(exc.reason, m, exc.detail)
            return None
        if topic.kind != "telemetry" or topic.vehicle != packet.vehicle_id:
            self._reject("vehicle_mismatch", m, f"packet is from {packet.vehicle_id!r}")
            return None
        schema = self.schemas.get(packet.fingerprint)
        if schema is not None and len(schema.columns) != packet.columns:
            self._reject("schema_mismatch", m,
                         f"{packet.columns} columns, schema {packet.fingerprint.hex()} has {len(schema.columns)}")
            return None
        now = time.time()
        self.stats.last_lag_s = now - (packet.start_time + packet.rows)
        new = NewPacket(packet.vehicle_id, packet.boot_id, packet.seq, packet.fingerprint, packet.model,
                        self.lake.part_key(self.mask(packet.vehicle_id)), packet.start_time, packet.rows,
                        m.payload, now)
        return new, packet

    def _reject(self, reason: str, m: Incoming, detail: str) -> None:
        self.quarantine.put(reason, m.topic, m.payload, detail)

    # -- lake writer ----------------------------------------------------------------------------

    def _tick(self) -> float:
        return min(1.0, self.config.roll_interval_s / 4)

    async def _writer_loop(self) -> None:
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._flush_now.wait(), timeout=self._tick())
                self._flush_now.clear()
                force = True
            except TimeoutError:
                force = False
            try:
                if force or await asyncio.to_thread(self._roll_due):
                    await asyncio.to_thread(self.flush)
            except (LakeError, StagingError, OSError, pa.ArrowException) as exc:
                # the unfinished batch stays in staging and is written again (same file names)
                self.stats.write_errors += 1
                delay = self._backoff.next()
                log.error("writing to the lake failed, retrying in %.0f s: %s", delay, exc)
                await asyncio.sleep(delay)
                continue
            self._backoff.reset()
            if time.monotonic() >= self._next_prune:
                self._next_prune = time.monotonic() + 3600
                cutoff = time.time() - self.config.dedupe_days * 86400
                try:
                    pruned = await asyncio.to_thread(self.staging.prune, cutoff)
                    if pruned:
                        log.info("pruned %d dedupe keys older than %g days", pruned, self.config.dedupe_days)
                    await asyncio.to_thread(self.expire_parked)
                except (StagingError, OSError) as exc:  # housekeeping: tried again in an hour
                    log.error("staging housekeeping failed: %s", exc)

    def expire_parked(self, now: float | None = None) -> int:
        """Quarantine packets parked longer than ``park_days`` (their schema never arrived), so
        staging stays bounded; returns how many. A packet's bytes leave staging only after its
        quarantine copy is written, and never while the quarantine is full (then they stay
        parked, with a warning)."""
        cutoff = (time.time() if now is None else now) - self.config.park_days * 86400
        total = 0
        while True:
            room = self.quarantine.room()
            expired = self.staging.parked_before(cutoff, min(1000, room)) if room else []
            if not room and self.staging.parked_before(cutoff, 1):
                log.warning("the quarantine is full: packets parked over %g days stay in staging",
                            self.config.park_days)
            if not expired:
                break
            for _id, vehicle, _boot, seq, fp, payload in expired:
                self._reject("schema_never_arrived", Incoming(self.topics.telemetry(vehicle),
                                                              payload, 0, 0),
                             f"seq {seq}: schema {fp.hex()} unknown after {self.config.park_days:g} days")
            total += self.staging.forget_parked([row[0] for row in expired])
        if total:
            log.warning("%d parked packets quarantined: their schema never arrived", total)
        return total

    def _roll_due(self) -> bool:
        if self.staging.unfinished_batch():
            return True
        backlog = self.staging.backlog(self.schemas)
        if backlog.packets == 0:
            return False
        return (backlog.bytes >= self.config.roll_bytes or backlog.packets >= self.config.max_batch_packets
                or time.time() - (backlog.oldest or 0) >= self.config.roll_interval_s)

    def flush(self) -> int:
        """Write every staged packet with a known schema to the lake; returns packets written."""
        written = 0
        while (job := self.staging.assign_batch(list(self.schemas), self.config.max_batch_packets)) is not None:
            batch, redo, staged = job
            if redo:
                log.warning("batch %d was interrupted; writing it again (%d packets)", batch, len(staged))
            result = self.writer.write_batch(batch, redo, staged)
            self.staging.finish_batch(batch, result.files, result.latest)
            self.stats.packets_written += result.packets
            self.stats.rows_written += result.rows
            self.stats.files_written += len(result.files)
            self.stats.batches += 1
            self.stats.out_of_range.update(result.out_of_range)
            written += result.packets
            log.info("batch %d: %d packets, %d rows, %d files", batch, result.packets, result.rows, len(result.files))
        return written

    # -- metrics --------------------------------------------------------------------------------

    def gap_count(self, max_age_s: float = 5.0) -> int:
        """Missing seqs below each (vehicle, boot)'s highest seq (one row per vehicle and boot, so
        the query is cheap; still cached for ``max_age_s``)."""
        at, value = self._gaps_cache
        if time.monotonic() - at > max_age_s:
            value = self.staging.missing_count()
            self._gaps_cache = (time.monotonic(), value)
        return value

    def metric_samples(self) -> list[Sample]:
        s, c = self.stats, "counter"
        backlog = self.staging.backlog(self.schemas)
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
            ("dcm_sink_schema_events_total", c, "schema new/change events", {}, s.schema_events),
            ("dcm_sink_schema_events_unpublished_total", c, "schema events not published", {}, s.events_dropped),
            ("dcm_sink_schema_cache_evictions_total", c, "model/vehicle schema states evicted from memory"
             " (read back from staging when seen again)", {}, self.registry.evicted),
            ("dcm_sink_validated_cache_evictions_total", c, "decoded packets evicted before writing", {},
             self.cache.evicted),
            ("dcm_sink_quarantine_unsaved_total", c, "rejects counted but not saved (quarantine full)", {},
             self.quarantine.dropped),
            ("dcm_sink_staging_backlog_packets", "gauge", "staged packets waiting for the lake", {}, backlog.packets),
            ("dcm_sink_staging_backlog_bytes", "gauge", "staged bytes waiting for the lake", {}, backlog.bytes),
            ("dcm_sink_parked_packets", "gauge", "staged packets of unknown schema", {},
             self.staging.pending() - backlog.packets),
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
