"""Drain the outbox to the broker: QoS 1, in order, removed only after PUBACK.

Reconnects forever with exponential backoff and full jitter. On every
connect the gateway's schema is (re)published retained under
``<prefix>/schemas/<fingerprint>`` so a sink can learn it.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import ssl

import aiomqtt

from dcm.broker import BrokerUrl

from .outbox import Outbox

log = logging.getLogger(__name__)


@dataclasses.dataclass
class PublisherStats:
    published: int = 0
    published_bytes: int = 0
    connects: int = 0
    connect_failures: int = 0
    connected: bool = False


@dataclasses.dataclass(frozen=True)
class PublisherSettings:
    broker: BrokerUrl
    client_id: str
    schema_topic: str
    schema_payload: bytes
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    window: int = 16  # packets in flight awaiting PUBACK
    backoff_min_s: float = 0.5
    backoff_max_s: float = 30.0


def _tls_context(settings: PublisherSettings) -> ssl.SSLContext | None:
    if not settings.broker.tls:
        return None
    ctx = ssl.create_default_context(cafile=settings.ca_file)
    if settings.cert_file:
        ctx.load_cert_chain(settings.cert_file, settings.key_file)
    return ctx


class Publisher:
    """Publishes whatever the outbox holds; ``wake`` is set whenever a packet is added."""

    def __init__(self, outbox: Outbox, settings: PublisherSettings) -> None:
        self.outbox = outbox
        self.settings = settings
        self.stats = PublisherStats()
        self.wake = asyncio.Event()
        self.idle = asyncio.Event()  # set while the outbox is empty and we are connected

    async def run(self) -> None:
        """Run until cancelled."""
        delay = self.settings.backoff_min_s
        while True:
            try:
                async with self._client() as client:
                    self.stats.connects += 1
                    self.stats.connected = True
                    delay = self.settings.backoff_min_s
                    log.info("connected to %s", self.settings.broker)
                    await client.publish(self.settings.schema_topic, self.settings.schema_payload, qos=1, retain=True)
                    await self._drain(client)
            except aiomqtt.MqttError as exc:
                self.stats.connect_failures += 1
                log.warning("broker %s: %s; retrying in %.1f s", self.settings.broker, exc, delay)
            finally:
                self.stats.connected = False
                self.idle.clear()
            await asyncio.sleep(random.uniform(0, delay))
            delay = min(delay * 2, self.settings.backoff_max_s)

    def _client(self) -> aiomqtt.Client:
        b = self.settings.broker
        return aiomqtt.Client(
            b.host,
            b.port,
            username=b.username,
            password=b.password,
            identifier=self.settings.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            tls_context=_tls_context(self.settings),
            keepalive=30,
            timeout=15,
            max_inflight_messages=self.settings.window,
        )

    async def _drain(self, client: aiomqtt.Client) -> None:
        while True:
            batch = self.outbox.peek(self.settings.window)
            if not batch:
                self.idle.set()
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), timeout=1.0)
                except TimeoutError:
                    pass
                continue
            self.idle.clear()
            # QoS 1 keeps order on one connection; await the whole window's PUBACKs.
            await asyncio.gather(*(client.publish(item.topic, item.payload, qos=1) for item in batch))
            for item in batch:
                self.outbox.remove(item.id)
                self.stats.published += 1
                self.stats.published_bytes += len(item.payload)
