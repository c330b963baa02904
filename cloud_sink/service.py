"""The cloud sink service: MQTT → validate → durable staging (+ack) → Parquet lake.

:class:`Sink` only wires the parts and runs them as named tasks in one TaskGroup:

- ``intake`` (:class:`~cloud_sink.ingest.IntakeLoop`): the pure validator judges each
  message, packets are staged in group commits and acknowledged after the commit, and the
  schema events the registry put in the outbox are published;
- ``lake-writer`` (:class:`~cloud_sink.lake_loop.LakeLoop`): cuts a batch when the roll
  policy (:mod:`~cloud_sink.roll`) says so or a newly learned schema unparks packets, and
  once more on shutdown; hourly housekeeping;
- ``http``: ``/metrics`` (:mod:`~cloud_sink.metrics`) and the latest state, when configured.
"""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import dbc as dbc_files
from minute_packet import SchemaError, schema_from_dbc
from minute_packet.schema import SCHEMA_VERSION, SCHEMA_VERSIONS

from dcm_base.errors import ConfigError

from .config import MISSING_SECRET, SinkConfig
from .events import EventOutbox
from .http import Sample, serve
from .ingest import Ingest, IntakeLoop
from .intake import MqttIntake
from .lake import Lake
from .lake_loop import LakeLoop
from .mask_cache import MaskCache
from .metrics import SinkMetrics, SinkStats
from .quarantine import Quarantine
from .registry import SchemaRegistry
from .roll import RollPolicy
from .staging import Staging
from .validator import SchemaMessage, Validator
from .writer import LakeWriter, ValidatedCache

__all__ = ["Sink", "SinkConfig", "SinkStats"]

log = logging.getLogger(__name__)


class Sink:
    def __init__(self, config: SinkConfig) -> None:
        if config.vehicle_secret is None:  # no built-in key: the lake's vehicle ids would be reversible
            raise ConfigError(f"secret_file: {MISSING_SECRET}")
        self.config = config
        self.topics = config.topics
        self.stats = SinkStats()
        self.lake = Lake(config.lake_root, layout=config.layout, buckets=config.buckets,
                         compression=config.compression)
        try:  # before anything is opened: a root of another layout is refused
            self.lake.claim()
        except OSError as exc:  # unreachable now: claimed before the first file is written
            log.warning("lake %s not reachable at start (%s); its layout is checked at the first write",
                        config.lake_root, exc)
        self.staging = Staging(config.state_path)
        self.quarantine = Quarantine(config.quarantine_dir, max_files=config.quarantine_max_files,
                                     max_bytes=config.quarantine_max_bytes)
        self.outbox = EventOutbox()
        self.registry = SchemaRegistry(self.staging, self.outbox, max_schemas=config.max_schemas,
                                       max_bytes=config.max_schema_bytes)
        self.schemas = self.registry.schemas
        self.mask = MaskCache(config.vehicle_secret)
        self.cache = ValidatedCache(config.validated_cache)
        telemetry = self.topics.all_vehicles("telemetry")
        if config.share_group:
            telemetry = self.topics.shared(config.share_group, telemetry)
        self.intake = MqttIntake(config.broker, client_id=config.client_id, topics=[telemetry, self.topics.all_schemas],
                                 queue_size=config.queue_size, ca_file=config.ca_file)
        self.ingest = Ingest(validator=Validator(self.topics, self.schemas), staging=self.staging,
                             quarantine=self.quarantine, registry=self.registry, cache=self.cache, lake=self.lake,
                             mask=self.mask, topics=self.topics, stats=self.stats)
        for path in config.dbc_paths:
            db = dbc_files.load(path)
            for version in SCHEMA_VERSIONS:  # packets of older gateways (schema v1) decode too
                try:
                    schema = schema_from_dbc(db, source=Path(path).name, version=version)
                except SchemaError:
                    if version == SCHEMA_VERSION:
                        raise
                    continue  # v1 naming cannot serve this DBC: no v1 gateway could have sent it either
                self.ingest.learn(SchemaMessage(schema, schema.to_json()), pin=True)
        self.writer = LakeWriter(self.lake, self.staging, self.quarantine, worker_id=config.worker,
                                 schemas=self.schemas, mask=self.mask, cache=self.cache,
                                 chunk_packets=config.chunk_packets, row_group_rows=config.row_group_rows)
        self.lake_loop = LakeLoop(staging=self.staging, writer=self.writer, quarantine=self.quarantine,
                                  schemas=self.schemas, stats=self.stats, topics=self.topics,
                                  policy=RollPolicy(config.roll_bytes, config.max_batch_packets, config.roll_interval_s),
                                  dedupe_days=config.dedupe_days, park_days=config.park_days)
        self.metrics = SinkMetrics(stats=self.stats, intake=self.intake, staging=self.staging, schemas=self.schemas,
                                   registry=self.registry, cache=self.cache, quarantine=self.quarantine,
                                   outbox=self.outbox)
        self.http_port: int | None = None
        self._stop = asyncio.Event()
        self._wake_writer = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        self.intake.start()
        intake_loop = IntakeLoop(self.intake, self.ingest, self.outbox, batch_size=self.config.intake_batch,
                                 stats=self.stats, topics=self.topics, schema_arrived=self._wake_writer)
        try:
            async with asyncio.TaskGroup() as tg:
                intake = tg.create_task(intake_loop.run(), name="intake")
                writer = tg.create_task(self.lake_loop.run(self._stop, self._wake_writer), name="lake-writer")
                if self.config.http_host:
                    tg.create_task(serve(self, self.config.http_host, self.config.http_port, self._stop,
                                         self._bound, self.config.http_token), name="http")
                await self._stop.wait()
                intake.cancel()
                self._wake_writer.set()
                await writer
        finally:
            self.intake.stop()
            await asyncio.to_thread(self.flush)  # clean shutdown: everything staged goes to the lake
            self.staging.close()

    def _bound(self, port: int) -> None:
        self.http_port = port

    # the parts' entry points, for callers that drive a sink without run() (tests, the bench)

    def flush(self) -> int:
        """Write every staged packet with a known schema to the lake; returns packets written."""
        return self.lake_loop.flush()

    def expire_parked(self, now: float | None = None) -> int:
        return self.lake_loop.expire_parked(now)

    def gap_count(self, max_age_s: float = 5.0) -> int:
        return self.metrics.gap_count(max_age_s)

    def metric_samples(self) -> list[Sample]:
        return self.metrics.samples()

