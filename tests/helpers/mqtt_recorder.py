"""A real MQTT subscriber for tests: persistent session, reconnects, records (topic, payload) in order."""
from __future__ import annotations

import threading

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from dcm.testing import until


class Recorder:
    def __init__(self, broker, topics: list[str], client_id: str) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self._topics = topics
        self.connected = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.on_disconnect = lambda *a: self.connected.clear()
        c.reconnect_delay_set(0.1, 0.5)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        c.connect(broker.host, broker.port, clean_start=False, properties=props)
        c.loop_start()
        self._client = c
        if not self.connected.wait(10):
            raise TimeoutError("recorder could not connect")

    def _on_connect(self, client, userdata, flags, rc, props) -> None:
        for t in self._topics:
            client.subscribe(t, qos=1)
        self.connected.set()

    def _on_message(self, client, userdata, msg) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def wait_for(self, predicate, timeout: float = 30.0) -> bool:
        """Whether ``predicate(messages so far)`` became true within ``timeout`` s (polled on a snapshot)."""
        def check() -> bool:
            with self._lock:
                return bool(predicate(list(self.messages)))

        return until(check, timeout)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
