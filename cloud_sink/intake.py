"""MQTT intake with acknowledgement after the durable write.

paho-mqtt runs its network loop in its own thread with ``manual_ack``: a
QoS 1 message is PUBACKed only when the sink calls :meth:`MqttIntake.ack`,
after the packet is staged on disk. Messages cross to the asyncio loop
through a bounded queue; when it is full the network thread waits, so the
broker holds the backlog instead of the sink's memory. The session is
persistent (MQTT v5, clean start off, session expiry), so messages published
while the sink is down are delivered when it comes back.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import ssl
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from dcm_base.broker_url import BrokerUrl

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 7 * 24 * 3600


@dataclasses.dataclass(frozen=True)
class Incoming:
    topic: str
    payload: bytes
    mid: int
    qos: int


class MqttIntake:
    """Subscribes and hands messages to ``queue``; call :meth:`ack` once each is safe on disk."""

    def __init__(
        self,
        broker: BrokerUrl,
        *,
        client_id: str,
        topics: list[str],
        queue_size: int = 1000,
        ca_file: str | None = None,
        keepalive: int = 30,
    ) -> None:
        self.broker = broker
        self.topics = topics
        self.keepalive = keepalive  # seconds; a dead connection is noticed within ~1.5 x this
        self.queue: asyncio.Queue[Incoming] = asyncio.Queue(maxsize=queue_size)
        self.connected = threading.Event()  # set once the broker has acknowledged every subscription
        self._subscribe_mid: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = threading.Event()
        c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, manual_ack=True
        )
        if broker.username:
            c.username_pw_set(broker.username, broker.password)
        if broker.tls:
            c.tls_set_context(ssl.create_default_context(cafile=ca_file))
        c.max_inflight_messages_set(100)
        c.max_queued_messages_set(1000)  # bounds outgoing events while disconnected
        c.reconnect_delay_set(min_delay=1, max_delay=30)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        self._client = c

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        self._client.connect_async(self.broker.host, self.broker.port, keepalive=self.keepalive, clean_start=False, properties=props)
        self._client.loop_start()

    def stop(self) -> None:
        self._closing.set()
        self._client.disconnect()
        self._client.loop_stop()

    def ack(self, mid: int, qos: int) -> None:
        if qos > 0:
            self._client.ack(mid, qos)

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> bool:
        """Queue an outgoing message; False when paho refused it (queue full or not connected)."""
        info = self._client.publish(topic, payload, qos=qos)
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("broker %s refused the connection: %s", self.broker, reason_code)
            return
        log.info("connected to %s (session present: %s)", self.broker, flags.session_present)
        _, self._subscribe_mid = client.subscribe([(topic, 1) for topic in self.topics])

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        if mid != self._subscribe_mid:
            return
        refused = [str(rc) for rc in reason_codes if rc.is_failure]
        if refused:
            log.error("broker %s refused subscriptions %s: %s", self.broker, self.topics, refused)
            return
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        if not self._closing.is_set():
            log.warning("disconnected from %s: %s; reconnecting", self.broker, reason_code)

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        item = Incoming(msg.topic, bytes(msg.payload), msg.mid, msg.qos)
        assert self._loop is not None
        fut = asyncio.run_coroutine_threadsafe(self.queue.put(item), self._loop)
        while not self._closing.is_set():  # wait for room: backpressure onto the broker
            try:
                fut.result(timeout=0.5)
                return
            except concurrent.futures.TimeoutError:
                continue
        fut.cancel()
