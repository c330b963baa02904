"""The cloud sink service: MQTT → validate → durable staging (+ack) → Parquet lake.

Two named tasks in one TaskGroup: ``intake`` validates and stages messages
in group commits and acknowledges them after the commit; ``lake-writer``
moves staged packets into Parquet batches every ``flush_interval_s`` (or as
soon as ``flush_packets`` are waiting) and once more on shutdown.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import time
from pathlib import Path

import dbc as dbc_files
from minute_packet import MinutePacket, PacketDecodeError, Schema, SchemaError, decode, schema_from_dbc

from dcm.broker import BrokerUrl

from .intake import Incoming, MqttIntake
from .lake import latest_values, mask_vehicle, packets_table, write_partitioned
from .quarantine import Quarantine
from .staging import NewPacket, Staging

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SinkConfig:
    broker: BrokerUrl
    lake_root: Path
    state_path: Path
    quarantine_dir: Path
    vehicle_secret: bytes
    topic_prefix: str = "dcm"
    share_group: str | None = None  # MQTT v5 shared subscription group for scale-out
    client_id: str = "dcm-sink"
    dbc_paths: tuple[Path, ...] = ()  # schemas known up front (default collection)
    flush_interval_s: float = 60.0
    flush_packets: int = 5000
    intake_batch: int = 500
    ca_file: str | None = None


@dataclasses.dataclass
class SinkStats:
    packets_in: int = 0
    packets_staged: int = 0
    duplicates: int = 0
    packets_stored: int = 0
    rows_stored: int = 0
    files_written: int = 0
    schemas_learned: int = 0
    rejects: collections.Counter = dataclasses.field(default_factory=collections.Counter)


class Sink:
    def __init__(self, config: SinkConfig) -> None:
        self.config = config
        self.stats = SinkStats()
        self.staging = Staging(config.state_path)
        self.quarantine = Quarantine(config.quarantine_dir)
        self.schemas: dict[bytes, Schema] = {}
        for fp, payload in self.staging.schemas():
            self.schemas[fp] = Schema.from_json(payload)
        for path in config.dbc_paths:
            schema = schema_from_dbc(dbc_files.load(path), source=Path(path).name)
            self._learn(schema, schema.to_json())
        self._decoded: dict[tuple[str, bytes, int], MinutePacket] = {}
        self._stop = asyncio.Event()
        self._flush_now = asyncio.Event()
        prefix = config.topic_prefix
        telemetry = f"{prefix}/+/telemetry"
        if config.share_group:
            telemetry = f"$share/{config.share_group}/{telemetry}"
        self.intake = MqttIntake(
            config.broker, client_id=config.client_id, topics=[telemetry, f"{prefix}/schemas/+"], ca_file=config.ca_file
        )

    def _learn(self, schema: Schema, payload: bytes) -> None:
        fp = schema.fingerprint
        if fp not in self.schemas:
            self.schemas[fp] = schema
            self.stats.schemas_learned += 1
            log.info("schema %s learned (%d columns, %s)", fp.hex(), len(schema.columns), schema.source)
        self.staging.save_schema(fp, payload, time.time())

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        self.intake.start()
        try:
            async with asyncio.TaskGroup() as tg:
                intake = tg.create_task(self._intake_loop(), name="intake")
                writer = tg.create_task(self._writer_loop(), name="lake-writer")
                await self._stop.wait()
                intake.cancel()
                self._flush_now.set()
                await writer
        finally:
            self.intake.stop()
            await asyncio.to_thread(self.flush)
            self.staging.close()

    # -- intake ---------------------------------------------------------------------------------

    async def _intake_loop(self) -> None:
        q = self.intake.queue
        while True:
            batch = [await q.get()]
            while len(batch) < self.config.intake_batch and not q.empty():
                batch.append(q.get_nowait())
            new = [p for p in (self._accept(m) for m in batch) if p is not None]
            if new:
                fresh = await asyncio.to_thread(self.staging.stage, new)
                for packet, is_new in zip(new, fresh):
                    if is_new:
                        self.stats.packets_staged += 1
                    else:
                        self.stats.duplicates += 1
                        self._decoded.pop((packet.vehicle, packet.boot, packet.seq), None)
            for m in batch:  # only now is every packet of the batch safe on disk
                self.intake.ack(m.mid, m.qos)
            if self.staging_backlog() >= self.config.flush_packets:
                self._flush_now.set()

    def staging_backlog(self) -> int:
        return self.stats.packets_staged - self.stats.packets_stored

    def _accept(self, m: Incoming) -> NewPacket | None:
        parts = m.topic.split("/")
        if len(parts) == 3 and parts[1] == "schemas":
            try:
                schema = Schema.from_json(m.payload)
            except SchemaError as exc:
                self.quarantine.put("bad_schema", m.topic, m.payload, str(exc))
                return None
            if schema.fingerprint.hex() != parts[2]:
                self.quarantine.put("schema_fingerprint_mismatch", m.topic, m.payload, "topic and content differ")
                return None
            self._learn(schema, m.payload)
            self._flush_now.set()  # parked packets may now be writable
            return None
        self.stats.packets_in += 1
        try:
            packet = decode(m.payload)
        except PacketDecodeError as exc:
            self.quarantine.put(exc.reason, m.topic, m.payload, exc.detail)
            return None
        if len(parts) != 3 or parts[1] != packet.vehicle_id:
            self.quarantine.put("vehicle_mismatch", m.topic, m.payload, f"packet is from {packet.vehicle_id!r}")
            return None
        schema = self.schemas.get(packet.fingerprint)
        if schema is not None and len(schema.columns) != packet.columns:
            self.quarantine.put("schema_mismatch", m.topic, m.payload,
                                f"{packet.columns} columns, schema {packet.fingerprint.hex()} has {len(schema.columns)}")
            return None
        self._decoded[packet.key] = packet
        return NewPacket(packet.vehicle_id, packet.boot_id, packet.seq, packet.fingerprint, packet.model,
                         packet.start_time, packet.rows, m.payload, time.time())

    # -- lake writer ----------------------------------------------------------------------------

    async def _writer_loop(self) -> None:
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._flush_now.wait(), timeout=self.config.flush_interval_s)
            except TimeoutError:
                pass
            self._flush_now.clear()
            await asyncio.to_thread(self.flush)

    def flush(self) -> int:
        """Write every staged packet with a known schema to the lake; returns packets written."""
        written = 0
        while (job := self.staging.assign_batch(list(self.schemas), self.config.flush_packets)) is not None:
            batch, staged = job
            groups: dict[tuple[bytes, str, str], list[MinutePacket]] = collections.defaultdict(list)
            for sp in staged:
                packet = self._decoded.pop(sp.key, None) or decode(sp.payload)
                groups[(packet.fingerprint, packet.model, packet.vehicle_id)].append(packet)
            files: list[str] = []
            latest: list[tuple[str, str, int, float | None]] = []
            rows = 0
            for (fp, model, vehicle_id), packets in groups.items():
                schema = self.schemas[fp]
                masked = mask_vehicle(self.config.vehicle_secret, vehicle_id)
                table = packets_table(packets, schema)
                rows += table.num_rows
                files += write_partitioned(self.config.lake_root, batch, table, model=model, vehicle=masked,
                                           fingerprint=fp)
                latest += [(masked, name, ts, v) for name, (ts, v) in latest_values(packets, schema).items()]
            self.staging.finish_batch(batch, files, latest)
            self.stats.packets_stored += len(staged)
            self.stats.rows_stored += rows
            self.stats.files_written += len(files)
            written += len(staged)
            log.info("batch %d: %d packets, %d rows, %d files", batch, len(staged), rows, len(files))
        return written
