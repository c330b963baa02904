"""The gateway service: CAN bus → sampler → durable outbox → MQTT.

python-can's ``recv`` blocks, so acquisition runs in one dedicated thread
(``can-reader``) that owns the sampler and does nothing slow: finished
packets go through a small bounded queue to the ``packet-writer`` thread,
which compresses them and commits them to the outbox (an fsync on an SD card
can take a while). The asyncio loop owns publishing; the outbox, bounded by
its byte budget, is the hand-over. Opening the configured bus is
:func:`gateway.can_source.open_bus`; the status message is assembled in
:mod:`gateway.status`.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import queue
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import can

import dbc as dbc_files
from dcm_base.errors import ConfigError, ServiceError
from minute_packet import encode, schema_from_dbc, signals_left_out
from minute_packet.codec import MinutePacket
from minute_packet.event_packet import EventPacket
from minute_packet.event_packet import encode as encode_event

from .can_source import CanSource, open_bus
from .clock import ClockGuard, clock_synchronised
from .config import GatewayConfig, load_vss
from .decoder import frame_key
from .outbox import Outbox, OutboxError
from .publisher import Publisher, PublisherSettings
from .sampler import Sampler
from .status import gateway_status, interface_drops
from .triggers import TriggerEngine, TriggerError

log = logging.getLogger(__name__)

CLOCK_CHECK_FRAMES = 256  # frames between wall-clock step checks (~0.1 s on a busy bus)
PACKET_QUEUE = 64  # finished packets waiting for the writer thread (~64 minutes of one car)


@dataclasses.dataclass
class GatewayStats:
    packets_made: int = 0
    packet_bytes: int = 0
    rows_made: int = 0
    writer_stalls: int = 0  # the reader waited for the packet writer (queue full)
    packets_unstored: int = 0  # the outbox refused a packet (disk error, larger than the budget)
    events_made: int = 0  # event packets of edge triggers stored in the outbox


class GatewayError(ServiceError):
    """The gateway stopped because acquisition or storage failed (the cause is chained)."""


class Gateway:
    """One vehicle's gateway. ``run()`` until ``stop()``; the final partial packet is flushed.

    ``bus`` replaces the configured bus (tests, the demo, a :class:`~gateway.replay.LogReplay`).
    A bus whose ``recv`` raises :class:`EOFError` has ended: the gateway flushes and stops by
    itself. A bus with ``recorded = True`` carries recorded timestamps: they are not wall-clock
    checked, and nothing is left to drain from it at a stop.
    """

    def __init__(self, config: GatewayConfig, *, bus: can.BusABC | None = None) -> None:
        self.config = config
        self.db = dbc_files.load(config.dbc_path)
        self.schema = schema_from_dbc(self.db, config.collection, source=Path(config.dbc_path).name,
                                      vss=load_vss(config))
        left_out = signals_left_out(self.db)
        if left_out:
            log.warning("%s: %d signals have no column (a cell holds 64 bits; a repeated name reads as its"
                        " last signal): %s", config.dbc_path, len(left_out), ", ".join(left_out[:10])
                        + (" ..." if len(left_out) > 10 else ""))
        self.boot_id = uuid.uuid4().bytes
        self.sampler = Sampler(self.db, self.schema, vehicle_id=config.vehicle_id, model=config.model, boot_id=self.boot_id)
        self.outbox = Outbox(config.outbox_path, max_bytes=config.outbox_max_bytes)
        self.clock = ClockGuard(step_s=config.clock_step_s, slew=config.clock_slew)
        self.publisher = Publisher(
            self.outbox,
            PublisherSettings(
                broker=config.broker,
                client_id=f"dcm-gw-{config.vehicle_id}",
                schema_topic=config.topics.schema(self.schema.fingerprint),
                schema_payload=self.schema.to_json(),
                status_topic=config.status_topic,
                ca_file=config.ca_file,
                cert_file=config.cert_file,
                key_file=config.key_file,
                backlog_rate=config.backlog_rate,
                status_interval_s=config.status_interval_s,
            ),
            status=self.status,
        )
        try:
            self.triggers = TriggerEngine(self.db, config.triggers, vehicle_id=config.vehicle_id, model=config.model,
                                          boot_id=self.boot_id) if config.triggers else None
        except TriggerError as exc:
            raise ConfigError(f"triggers: {exc}") from None
        self.stats = GatewayStats()
        self._stop = threading.Event()
        self._recorded = bool(getattr(bus, "recorded", False))
        self.source = CanSource(bus) if bus is not None else CanSource(opener=self._open_bus, stop=self._stop)
        self._own_bus = bus is None
        self._acquisition_done = asyncio.Event()
        # minute packets, encoded event packets (bytes: edge triggers, stored as they come) and the end marker
        self._packets: queue.Queue[MinutePacket | bytes | None] = queue.Queue(maxsize=PACKET_QUEUE)
        self._failure: BaseException | None = None  # what stopped a thread; run() raises it
        self.clock_synced: bool | None = clock_synchronised()
        self._frames_since_check = 0
        self._last_collected = time.monotonic()

    def _open_bus(self) -> can.BusABC:
        return open_bus(self.config, self.sampler.decoder.can_filters, fd=self.config.fd or self.needs_fd)

    @property
    def needs_fd(self) -> bool:
        """A collected message is CAN FD: without the FD flag the kernel would never pass it on."""
        return any(plan.message.is_fd for plan in self.sampler.decoder.plans.values())

    def status(self) -> dict[str, Any]:
        """What the retained status message reports (:func:`gateway.status.gateway_status`)."""
        return gateway_status(self, interface_drops(self.config.channel) if self._own_bus else None)

    def stop(self) -> None:
        """Ask the reader to flush and finish; ``run()`` returns once the outbox is drained or
        ``drain_timeout`` passes."""
        self._stop.set()

    async def run(self, *, drain_timeout: float = 30.0) -> None:
        loop = asyncio.get_running_loop()
        reader = threading.Thread(target=self._read_loop, name="can-reader", daemon=True)
        writer = threading.Thread(target=self._write_loop, args=(loop,), name="packet-writer", daemon=True)
        try:
            async with asyncio.TaskGroup() as tg:
                pub = tg.create_task(self.publisher.run(), name="publisher")
                writer.start()
                reader.start()
                await self._acquisition_done.wait()
                try:
                    await asyncio.wait_for(self._drained(), timeout=drain_timeout)
                except TimeoutError:
                    log.warning("stopping with %d packets still in the outbox; they are sent on the next start",
                                self.outbox.depth)
                pub.cancel()
            await asyncio.wait_for(self.publisher.say_offline(), timeout=5)
        except TimeoutError:
            pass
        finally:
            self._stop.set()
            reader.join(timeout=5)
            writer.join(timeout=5)
            if self._own_bus:
                self.source.close()
            if writer.is_alive():  # never pull the outbox from under a writer still committing
                lost = self._packets.qsize()
                self.stats.packets_unstored += lost
                log.error("packet writer still busy at shutdown; %d queued packets not stored", lost)
            else:
                self.outbox.close()
        if self._failure is not None:
            raise GatewayError(f"gateway stopped: {self._failure}") from self._failure

    async def _drained(self) -> None:
        while self.outbox.depth:
            self.publisher.wake.set()
            await asyncio.sleep(0.05)

    def _emit(self, packets: list[MinutePacket]) -> None:
        """Hand finished packets to the writer thread (reader side; waits only if 64 are queued).

        The clock state is stamped here, when the packet was sampled, not when it is written."""
        if packets:
            self.clock_synced = clock_synchronised()
        for packet in packets:
            packet = dataclasses.replace(packet, clock_synced=self.clock_synced,
                                         clock_correction_ms=self.clock.correction_ms)
            try:
                self._packets.put_nowait(packet)
            except queue.Full:
                self.stats.writer_stalls += 1
                self._packets.put(packet)

    def _write_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Compress and commit packets to the outbox until the reader's end-of-stream marker."""
        try:
            while (packet := self._packets.get()) is not None:
                if isinstance(packet, bytes):  # an event packet: same durable outbox, sent as soon as stored
                    try:
                        self.outbox.put(self.config.topics.events(self.config.vehicle_id), packet)
                    except OutboxError as exc:
                        self.stats.packets_unstored += 1
                        log.error("event packet not stored: %s", exc)
                        continue
                    self.stats.events_made += 1
                    loop.call_soon_threadsafe(self.publisher.wake.set)
                    continue
                try:
                    payload = encode(packet, level=self.config.zstd_level)
                    self.outbox.put(self.config.telemetry_topic, payload)
                except Exception as exc:  # keep draining, so the reader never blocks on a dead writer
                    self.stats.packets_unstored += 1
                    if not isinstance(exc, OutboxError) and self._failure is None:
                        self._failure = exc
                    log.error("packet %d not stored: %s", packet.seq, exc)
                    continue
                self.stats.packets_made += 1
                self.stats.packet_bytes += len(payload)
                self.stats.rows_made += packet.rows
                loop.call_soon_threadsafe(self.publisher.wake.set)
        finally:
            loop.call_soon_threadsafe(self._acquisition_done.set)

    def _check_clock(self) -> None:
        mono = time.monotonic()
        self.clock.observe(time.time() - mono, mono)

    def _handle(self, msg: can.Message) -> None:
        ts = msg.timestamp
        if not self._recorded:
            self._frames_since_check += 1
            if self._frames_since_check >= CLOCK_CHECK_FRAMES:
                self._frames_since_check = 0
                self._check_clock()
                self._idle_flush()  # uncollected traffic must not keep a minute open forever
            ts = self.clock.sample_time(ts)
        key = frame_key(msg.arbitration_id, msg.is_extended_id)
        packets = self.sampler.add(ts, key, msg.data)
        if self.triggers is not None:
            self._emit_events(self.triggers.on_frame(ts, key, msg.data))
        if packets:
            self._emit(packets)

    def _emit_events(self, events: list[EventPacket]) -> None:
        """Queue finished event packets for the writer, which stores them as they come."""
        for event in events:
            self._packets.put(encode_event(event))

    def _idle_flush(self) -> None:
        """No collected frame for ``idle_flush_s`` (ignition off, say): send the open minute now."""
        if self.sampler.has_open_rows and time.monotonic() - self._last_collected > self.config.idle_flush_s:
            self._emit(self.sampler.flush())

    def _read_loop(self) -> None:
        source, stats = self.source, self.sampler.stats
        if not self._recorded:
            self._check_clock()
        self._last_collected = time.monotonic()
        try:
            while not self._stop.is_set():
                try:
                    msg = source.recv(timeout=0.2)
                except EOFError:  # the source ended (a replayed log)
                    break
                if msg is None:
                    if not self._recorded:
                        self._check_clock()
                    self._idle_flush()
                    if self.triggers is not None:  # a post-trigger window also ends on a silent bus
                        self._emit_events(self.triggers.tick(time.time()))
                    continue
                ignored = stats.frames_ignored
                self._handle(msg)
                if stats.frames_ignored == ignored:
                    self._last_collected = time.monotonic()
            if not self._recorded:
                while (msg := source.recv(timeout=0)) is not None:  # what the bus still holds
                    self._handle(msg)
            self._emit(self.sampler.flush())
            if self.triggers is not None:
                self._emit_events(self.triggers.flush())
        except Exception as exc:  # a driver or log error: keep what was sampled, then stop loudly
            log.exception("CAN reader failed")
            self._failure = exc
            try:
                self._emit(self.sampler.flush())
            except Exception:
                log.exception("could not flush the open packet")
        finally:
            self._packets.put(None)  # end of stream for the writer
