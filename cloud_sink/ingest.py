"""Intake: validated messages → one staging commit → acknowledgements, and the loop that runs it.

:class:`Ingest` handles one batch of messages (in a worker thread): the pure
:class:`~cloud_sink.validator.Validator` judges each message, rejects go to
quarantine, schemas to the registry, and the packets are staged in one
transaction; their schema uses go to the registry, whose events land in the
:class:`~cloud_sink.events.EventOutbox`. :class:`IntakeLoop` takes batches
off the MQTT queue, retries a failed commit with backoff (nothing is acked
until it is durable), acks, then publishes the events waiting in the outbox.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable

import faultpoints
from dcm_base.backoff import Backoff
from minute_packet import Topics

from .events import EventOutbox
from .intake import Incoming, MqttIntake
from .lake import Lake
from .metrics import SinkStats
from .quarantine import Quarantine
from .registry import RegistryFull, SchemaRegistry
from .staging import NEW, STALE, NewPacket, Staging, StagingError
from .validator import PacketMessage, Rejected, SchemaMessage, Validator
from .writer import ValidatedCache

log = logging.getLogger(__name__)


class Ingest:
    """Validate, dedupe and durably stage messages; ``__call__`` returns how many schema messages
    were accepted (parked packets may have become writable)."""

    def __init__(self, *, validator: Validator, staging: Staging, quarantine: Quarantine,
                 registry: SchemaRegistry, cache: ValidatedCache, lake: Lake, mask: Callable[[str], str],
                 topics: Topics, stats: SinkStats) -> None:
        self.validator, self.staging, self.quarantine = validator, staging, quarantine
        self.registry, self.cache, self.lake, self.mask = registry, cache, lake, mask
        self.topics, self.stats = topics, stats

    def learn(self, message: SchemaMessage, *, pin: bool = False) -> None:
        if self.registry.learn(message.schema, message.payload, pin=pin):
            self.stats.schemas_learned += 1

    def __call__(self, messages: list[Incoming]) -> int:
        accepted: list[tuple[NewPacket, PacketMessage]] = []
        schemas = 0
        for m in messages:
            verdict = self.validator.check(m.topic, m.payload)
            if isinstance(verdict, SchemaMessage):
                try:
                    self.learn(verdict)
                except RegistryFull as exc:  # bounded: refused with a reason, intake goes on
                    self.quarantine.put("schema_registry_full", m.topic, m.payload, str(exc))
                    continue
                schemas += 1
                continue
            if isinstance(verdict, Rejected):
                self.stats.packets_in += verdict.packet
                self.quarantine.put(verdict.reason, m.topic, m.payload, verdict.detail)
                continue
            self.stats.packets_in += 1
            accepted.append((self._new(verdict, m.payload), verdict))
        if accepted:
            self._stage(accepted)
        return schemas

    def _new(self, message: PacketMessage, payload: bytes) -> NewPacket:
        p, now = message.packet, time.time()
        self.stats.last_lag_s = now - (p.start_time + p.rows)
        return NewPacket(p.vehicle_id, p.boot_id, p.seq, p.fingerprint, p.model,
                         self.lake.part_key(self.mask(p.vehicle_id)), p.start_time, p.rows, payload, now)

    def _stage(self, accepted: list[tuple[NewPacket, PacketMessage]]) -> None:
        outcome = self.staging.stage([n for n, _ in accepted])
        uses = []
        for (new, message), status in zip(accepted, outcome):
            if status == NEW:
                self.stats.packets_staged += 1
                self.cache.put(message.packet)
                uses.append((new.model, self.mask(new.vehicle), new.fingerprint))
            elif status == STALE:  # older than the dedupe window: kept aside, not risked as a duplicate
                self.quarantine.put("older_than_dedupe_window", self.topics.telemetry(new.vehicle),
                                    new.payload, f"seq {new.seq} is at or below the pruned floor")
            else:
                self.stats.duplicates += 1
        if uses:
            self.registry.observe(uses)


class IntakeLoop:
    """Batches of up to ``batch_size`` messages from the MQTT queue through :class:`Ingest`."""

    def __init__(self, intake: MqttIntake, ingest: Ingest, outbox: EventOutbox, *, batch_size: int,
                 stats: SinkStats, topics: Topics, schema_arrived: asyncio.Event) -> None:
        self.intake, self.ingest, self.outbox = intake, ingest, outbox
        self.batch_size, self.stats, self.topics = batch_size, stats, topics
        self.schema_arrived = schema_arrived

    async def run(self) -> None:
        q = self.intake.queue
        while True:
            batch = [await q.get()]
            while len(batch) < self.batch_size and not q.empty():
                batch.append(q.get_nowait())
            backoff = Backoff(0.5, 30.0)
            while True:
                work = asyncio.ensure_future(asyncio.to_thread(self.ingest, batch))
                try:
                    schemas = await asyncio.shield(work)
                    break
                except asyncio.CancelledError:  # shutting down: let the commit finish before staging closes
                    try:
                        await work
                    except StagingError:
                        raise asyncio.CancelledError() from None  # not acked: the broker redelivers
                    self._ack(batch)
                    self.publish_events()
                    raise
                except StagingError as exc:  # e.g. disk full: nothing acked, retry the same messages
                    self.stats.staging_errors += 1
                    delay = backoff.next()
                    log.error("staging failed, retrying in %.1f s: %s", delay, exc)
                    await asyncio.sleep(delay)
            self._ack(batch)
            if schemas:
                self.schema_arrived.set()  # parked packets may now be writable
            self.publish_events()

    def _ack(self, batch: list[Incoming]) -> None:
        for m in batch:  # only now is every packet of the batch safe on disk
            self.intake.ack(m.mid, m.qos)
        faultpoints.hit("sink.ack.sent")

    def publish_events(self) -> None:
        """Send the outbox's schema events (QoS 1 via the intake's client); a refused one is counted."""
        for event in self.outbox.take():
            if not self.intake.publish(self.topics.schema_events, json.dumps(event).encode()):
                self.stats.events_dropped += 1
