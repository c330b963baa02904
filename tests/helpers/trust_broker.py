"""A fleet PKI and a Mosquitto started from deploy/mosquitto/dcm.conf, plus mutual-TLS MQTT clients."""
from __future__ import annotations

import ssl
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from dcm.broker import free_port
from dcm.mosquitto import Mosquitto, deploy_config
from dcm.pki import FleetPki

PREFIX = "dcm"
GROUP = "sinks"


def make_pki(directory: Path, vehicles=(), services=()) -> FleetPki:
    pki = FleetPki.create(directory)
    pki.issue_server("broker", dns=["localhost"], ips=["127.0.0.1"])
    for v in vehicles:
        pki.issue_vehicle(v)
    for s in services:
        pki.issue_service(s)
    pki.write_broker_files(directory, PREFIX, GROUP)
    return pki


def start_broker(pki: FleetPki, workdir: Path, *, persistence: bool = False, port: int | None = None,
                 acl_file_only: bool = False) -> Mosquitto:
    port = port or free_port()
    lines = deploy_config(port=port, pki_dir=pki.dir, persistence_dir=(workdir / "persist") if persistence else None,
                          acl_file_only=acl_file_only)
    if persistence:
        (workdir / "persist").mkdir(parents=True, exist_ok=True)
    broker = Mosquitto(workdir, lines, port=port)
    broker.start()
    return broker


def tls_context(pki: FleetPki, cn: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    if cn is not None:
        e = pki.find(cn)
        ctx.load_cert_chain(str(pki.dir / e.cert), str(pki.dir / e.key))
    return ctx


class TlsClient:
    """A paho client over mutual TLS recording messages, SUBACK and PUBACK reason codes."""

    def __init__(self, pki: FleetPki, port: int, cn: str | None, *, client_id: str | None = None,
                 clean_start: bool = True) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.subacks: list[list[str]] = []
        self.pubacks: dict[int, str] = {}
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._acked = threading.Condition(self._lock)
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or cn or "", protocol=mqtt.MQTTv5)
        c.tls_set_context(tls_context(pki, cn))
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        c.on_publish = self._on_publish
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        c.connect("127.0.0.1", port, clean_start=clean_start, properties=props)
        c.loop_start()
        self.client = c

    def _on_message(self, client, userdata, msg) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload)))

    def _on_subscribe(self, client, userdata, mid, reason_codes, props) -> None:
        with self._lock:
            self.subacks.append([str(rc) for rc in reason_codes])
        self._subscribed.set()

    def _on_publish(self, client, userdata, mid, reason_code, props) -> None:
        with self._acked:
            # 'No matching subscribers' is a success too
            self.pubacks[mid] = str(reason_code) if reason_code.is_failure else "Success"
            self._acked.notify_all()

    def subscribe(self, *filters: str) -> list[str]:
        self._subscribed.clear()
        self.client.subscribe([(f, 1) for f in filters])
        assert self._subscribed.wait(10), "no SUBACK"
        return self.subacks[-1]

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> str:
        """Publish at QoS 1 and return the PUBACK's reason code ('Success', 'Not authorized', ...)."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        with self._acked:
            assert self._acked.wait_for(lambda: info.mid in self.pubacks, 10), "no PUBACK"
            return self.pubacks[info.mid]

    def received(self) -> list[tuple[str, bytes]]:
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
