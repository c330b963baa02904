"""Drain the outbox to the broker: QoS 1, in order, removed only after PUBACK.

Reconnects forever with exponential backoff and full jitter. On every
connect it (re)publishes the schema retained under
``<prefix>/schemas/<fingerprint>`` and a retained ``online`` status; the
broker publishes the retained ``offline`` last will if the gateway vanishes.
Packets already in the outbox at connect time are the *backlog*: they are
sent oldest first at no more than ``backlog_rate`` packets/s, while packets
made after the connect (live ones) go out as soon as they exist.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any

import aiomqtt

import faultpoints
from dcm_base.backoff import Backoff
from dcm_base.broker_url import BrokerUrl

from .outbox import Outbox, OutboxItem

log = logging.getLogger(__name__)


@dataclasses.dataclass
class PublisherStats:
    published: int = 0
    published_bytes: int = 0
    backlog_published: int = 0
    connects: int = 0
    connect_failures: int = 0
    connected: bool = False


@dataclasses.dataclass(frozen=True)
class PublisherSettings:
    broker: BrokerUrl
    client_id: str
    schema_topic: str
    schema_payload: bytes
    status_topic: str
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    window: int = 16  # packets in flight awaiting PUBACK
    backlog_rate: float = 50.0  # packets/s
    status_interval_s: float = 60.0
    backoff_min_s: float = 0.5
    backoff_max_s: float = 10.0
    keepalive_s: int = 20  # a dead connection (blackholed, half-open) is noticed within ~1.5 x this


def tls_context(broker: BrokerUrl, ca_file: str | None, cert_file: str | None, key_file: str | None) -> ssl.SSLContext | None:
    """TLS for ``mqtts://`` URLs; a client certificate makes it mutual TLS."""
    if not broker.tls:
        return None
    ctx = ssl.create_default_context(cafile=ca_file)
    if cert_file:
        ctx.load_cert_chain(cert_file, key_file)
    return ctx


class SuspendDetector:
    """Notices a system suspend: CLOCK_BOOTTIME counts the time asleep, CLOCK_MONOTONIC does not."""

    def __init__(self, threshold_s: float = 2.0, boottime=None, monotonic=time.monotonic) -> None:
        self._boottime = boottime or (lambda: time.clock_gettime(time.CLOCK_BOOTTIME))
        self._monotonic = monotonic
        self._threshold = threshold_s
        self._gap = self._boottime() - self._monotonic()

    def check(self) -> float:
        """Seconds spent suspended since the last check (0.0 if none worth noting)."""
        gap = self._boottime() - self._monotonic()
        slept, self._gap = gap - self._gap, gap
        return slept if slept > self._threshold else 0.0


class Publisher:
    """Publishes whatever the outbox holds; ``wake`` is set whenever a packet is added."""

    def __init__(self, outbox: Outbox, settings: PublisherSettings, status: Callable[[], dict[str, Any]]) -> None:
        self.outbox = outbox
        self.settings = settings
        self.stats = PublisherStats()
        self.wake = asyncio.Event()
        self._status = status

    def _status_payload(self, state: str) -> bytes:
        body = {"state": state, "time": round(time.time(), 3)}
        if state == "online":
            body.update(self._status())
        return json.dumps(body, sort_keys=True).encode()

    async def run(self) -> None:
        """Run until cancelled."""
        backoff = Backoff(self.settings.backoff_min_s, self.settings.backoff_max_s, jitter=True)
        while True:
            try:
                async with self._client() as client:
                    self.stats.connects += 1
                    self.stats.connected = True
                    backoff.reset()
                    log.info("connected to %s", self.settings.broker)
                    await client.publish(self.settings.schema_topic, self.settings.schema_payload, qos=1, retain=True)
                    async with asyncio.TaskGroup() as tg:
                        tg.create_task(self._status_loop(client), name="status")
                        tg.create_task(self._drain(client), name="drain")
                        tg.create_task(self._watch_suspend(), name="suspend-watch")
            except* aiomqtt.MqttError as group:
                self.stats.connect_failures += 1
                log.warning("broker %s: %s; retrying in ≤%.1f s", self.settings.broker, group.exceptions[0],
                            backoff.delay)
            finally:
                self.stats.connected = False
            await asyncio.sleep(backoff.next())

    def _client(self) -> aiomqtt.Client:
        b, s = self.settings.broker, self.settings
        return aiomqtt.Client(
            b.host,
            b.port,
            username=b.username,
            password=b.password,
            identifier=s.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            tls_context=tls_context(b, s.ca_file, s.cert_file, s.key_file),
            will=aiomqtt.Will(s.status_topic, self._status_payload("offline"), qos=1, retain=True),
            keepalive=s.keepalive_s,
            timeout=min(15, 2 * s.keepalive_s),
            max_inflight_messages=s.window,
        )

    async def _watch_suspend(self) -> None:
        """After a suspend the TCP connection is usually dead but looks alive until the
        keepalive expires; reconnect at once instead of minutes later."""
        detector = SuspendDetector()
        while True:
            await asyncio.sleep(1.0)
            slept = detector.check()
            if slept:
                raise aiomqtt.MqttError(f"system was suspended for {slept:.0f} s; reconnecting")

    async def _status_loop(self, client: aiomqtt.Client) -> None:
        while True:
            await client.publish(self.settings.status_topic, self._status_payload("online"), qos=1, retain=True)
            await asyncio.sleep(self.settings.status_interval_s)

    async def say_offline(self) -> None:
        """Publish the retained offline status on a clean shutdown (the will covers the rest)."""
        try:
            async with self._client() as client:
                await client.publish(self.settings.status_topic, self._status_payload("offline"), qos=1, retain=True)
        except aiomqtt.MqttError as exc:
            log.info("could not publish offline status: %s", exc)

    async def _publish(self, client: aiomqtt.Client, batch: list[OutboxItem]) -> None:
        # QoS 1 keeps order on one connection; await the whole window's PUBACKs.
        await asyncio.gather(*(client.publish(item.topic, item.payload, qos=1) for item in batch))
        faultpoints.hit("publisher.acked")  # the broker has them; the outbox still does too
        # SQLite (an fsync) off the event loop, so PUBACKs and keepalives keep flowing
        await asyncio.to_thread(self.outbox.remove, [item.id for item in batch])
        self.stats.published += len(batch)
        self.stats.published_bytes += sum(len(item.payload) for item in batch)

    async def _drain(self, client: aiomqtt.Client) -> None:
        backlog_end = await asyncio.to_thread(self.outbox.last_id)  # what waited while we were offline
        # event packets of edge triggers that waited go first, at once, ahead of the rate-limited backlog
        while events := await asyncio.to_thread(self.outbox.peek_topic, "/events", backlog_end, self.settings.window):
            await self._publish(client, events)
        backlog_after = 0
        live_after = backlog_end
        interval = 1.0 / self.settings.backlog_rate
        next_backlog = time.monotonic()
        while True:
            self.wake.clear()  # cleared before looking, so a packet stored meanwhile is not missed
            live = await asyncio.to_thread(self.outbox.peek, self.settings.window, live_after)
            if live:
                await self._publish(client, live)
                live_after = live[-1].id
                continue
            now = time.monotonic()
            if backlog_after < backlog_end and now >= next_backlog:
                room = max(1, min(self.settings.window, int((now - next_backlog) / interval) + 1))
                batch = await asyncio.to_thread(self.outbox.peek, room, backlog_after, backlog_end)
                if batch:
                    await self._publish(client, batch)
                    self.stats.backlog_published += len(batch)
                    backlog_after = batch[-1].id
                    next_backlog = max(next_backlog + len(batch) * interval, now - 1.0)
                    continue
                backlog_after = backlog_end
            wait = max(0.0, next_backlog - now) if backlog_after < backlog_end else 1.0
            try:
                await asyncio.wait_for(self.wake.wait(), timeout=min(wait, 1.0))
            except TimeoutError:
                pass
