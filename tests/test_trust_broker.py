"""Per-vehicle identity at the broker: a real Mosquitto started from deploy/mosquitto/dcm.conf with
certificates, CRL, ACL and dynamic-security file made by dcm.pki. A vehicle's certificate publishes
only its own topics and reads only its own config; it can neither join the sinks' shared
subscription nor take a sink's client id (session); revoked or foreign certificates are refused; a
sink's certificate receives everything."""
from __future__ import annotations

import ssl
import time

import paho.mqtt.client as mqtt
import pytest

from dcm.pki import FleetPki
from dcm.testing import until

from helpers.trust_broker import GROUP, PREFIX, TlsClient, make_pki, start_broker

VEHICLES = ("VA", "VB", "VREV")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    root = tmp_path_factory.mktemp("trust")
    pki = make_pki(root / "pki", vehicles=VEHICLES, services=("sink-a", "sink-b"))
    pki.revoke("VREV")
    pki.write_broker_files(pki.dir, PREFIX, GROUP)
    broker = start_broker(pki, root / "broker")
    yield pki, broker
    broker.stop()


def _clients(pki, broker, *cns, **kw):
    return [TlsClient(pki, broker.port, cn, **kw) for cn in cns]


def test_a_vehicle_publishes_only_to_its_own_topics(fleet):
    pki, broker = fleet
    sink, a = _clients(pki, broker, "sink-a", "VA")
    try:
        assert sink.subscribe(f"{PREFIX}/#") == ["Granted QoS 1"]
        assert a.publish(f"{PREFIX}/VA/telemetry", b"own") == "Success"
        assert a.publish(f"{PREFIX}/VA/status", b"own-status") == "Success"
        for kind in ("telemetry", "events", "status", "config"):  # forging B's traffic or its config
            assert a.publish(f"{PREFIX}/VB/{kind}", b"forged") == "Not authorized", kind
        assert a.publish(f"{PREFIX}/VA/config", b"self-config") == "Not authorized"
        assert a.publish(f"{PREFIX}/events/schema", b"forged-event") == "Not authorized"
        assert until(lambda: len(sink.received()) >= 2, 5)
        time.sleep(0.3)  # anything forged would have arrived by now, behind the own packets
        assert sink.received() == [(f"{PREFIX}/VA/telemetry", b"own"), (f"{PREFIX}/VA/status", b"own-status")]
    finally:
        sink.close(), a.close()


def test_a_vehicle_reads_only_its_own_config(fleet):
    pki, broker = fleet
    sink, a, b = _clients(pki, broker, "sink-a", "VA", "VB")
    try:
        assert b.publish(f"{PREFIX}/VB/status", b"VB boot 123", retain=True) == "Success"
        assert sink.publish(f"{PREFIX}/VA/config", b"cfg-A", retain=True) == "Success"
        assert sink.publish(f"{PREFIX}/VB/config", b"cfg-B", retain=True) == "Success"
        refused = a.subscribe(f"{PREFIX}/#", f"{PREFIX}/+/telemetry", f"{PREFIX}/VB/status", f"{PREFIX}/VB/config",
                              "#")
        assert refused == ["Not authorized"] * 5
        assert a.subscribe(f"{PREFIX}/VA/config") == ["Granted QoS 1"]
        assert b.publish(f"{PREFIX}/VB/telemetry", b"b-data") == "Success"
        assert until(lambda: a.received(), 5)
        time.sleep(0.3)
        assert a.received() == [(f"{PREFIX}/VA/config", b"cfg-A")]  # not B's status, config or data
    finally:
        sink.close(), a.close(), b.close()


def test_a_vehicle_cannot_join_the_sinks_shared_subscription(fleet):
    pki, broker = fleet
    shared = f"$share/{GROUP}/{PREFIX}/+/telemetry"
    sink, a, b = _clients(pki, broker, "sink-b", "VA", "VB")
    try:
        assert sink.subscribe(shared) == ["Granted QoS 1"]
        assert a.subscribe(shared) == ["Not authorized"]
        assert a.subscribe(f"$share/other/{PREFIX}/+/telemetry") == ["Not authorized"]
        sent = [(f"{PREFIX}/VB/telemetry", b"b%d" % i) for i in range(20)]
        for topic, payload in sent:
            assert b.publish(topic, payload) == "Success"
        assert until(lambda: len(sink.received()) >= 20, 5)
        assert sink.received() == sent and a.received() == []  # none swallowed by a member that may not read
    finally:
        sink.close(), a.close(), b.close()


def test_the_client_id_is_the_certificate_so_nobody_takes_a_sinks_session(fleet):
    pki, broker = fleet
    topic = f"{PREFIX}/VB/telemetry"
    (sink,) = _clients(pki, broker, "sink-a", clean_start=False)
    sink.subscribe(topic)
    sink.close()  # its session keeps collecting
    (b,) = _clients(pki, broker, "VB")
    for i in range(5):
        assert b.publish(topic, b"q%d" % i) == "Success"
    (thief,) = _clients(pki, broker, "VA", client_id="sink-a", clean_start=False)
    time.sleep(0.5)
    assert thief.received() == []
    thief.close()
    (sink,) = _clients(pki, broker, "sink-a", clean_start=False)
    try:
        assert until(lambda: len(sink.received()) >= 5, 5)
        assert sink.received() == [(topic, b"q%d" % i) for i in range(5)]
    finally:
        sink.close(), b.close()


def _handshake(pki: FleetPki, port: int, ctx: ssl.SSLContext) -> str:
    """Connect and return the CONNACK outcome, or the TLS error that ended the attempt."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="probe", protocol=mqtt.MQTTv5)
    c.tls_set_context(ctx)
    try:
        c.connect("127.0.0.1", port)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not c.is_connected():
            if c.loop(0.1) != mqtt.MQTT_ERR_SUCCESS:
                break
        # TLS 1.3: the client's side of the handshake ends before the broker checks its certificate,
        # so a refusal shows as a closed connection without CONNACK
        return "connected" if c.is_connected() else "refused: closed without CONNACK"
    except (ssl.SSLError, OSError) as exc:
        return f"refused: {exc}"
    finally:
        c.disconnect()


def test_revoked_missing_and_foreign_certificates_are_refused(fleet, tmp_path):
    pki, broker = fleet
    from helpers.trust_broker import tls_context
    assert _handshake(pki, broker.port, tls_context(pki, "VA")) == "connected"
    assert _handshake(pki, broker.port, tls_context(pki, "VREV")).startswith("refused")
    assert _handshake(pki, broker.port, tls_context(pki, None)).startswith("refused")
    other = FleetPki.create(tmp_path / "other")
    other.issue_vehicle("VA")  # same name, another CA
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    e = other.find("VA")
    ctx.load_cert_chain(str(other.dir / e.cert), str(other.dir / e.key))
    assert _handshake(pki, broker.port, ctx).startswith("refused")


def test_revoking_takes_effect_when_the_broker_restarts(tmp_path):
    pki = make_pki(tmp_path / "pki", vehicles=("VC",), services=("sink-a",))
    broker = start_broker(pki, tmp_path / "broker")
    try:
        from helpers.trust_broker import tls_context
        assert _handshake(pki, broker.port, tls_context(pki, "VC")) == "connected"
        pki.revoke("VC")
        pki.write_broker_files(pki.dir, PREFIX, GROUP)
        broker.restart()
        assert _handshake(pki, broker.port, tls_context(pki, "VC")).startswith("refused")
        assert _handshake(pki, broker.port, tls_context(pki, "sink-a")) == "connected"
    finally:
        broker.stop()
