"""The gateway on the road: broker outages, replayed logs, status and last will, TLS."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import ssl
import subprocess
import threading
import uuid

import can
import paho.mqtt.client as mqtt
import pytest

import dbc
from dcm.broker import free_port, private_mosquitto
from dcm.testing import until, until_async
from gateway.config import GatewayConfig
from gateway.replay import LogReplay
from gateway.service import Gateway
from minute_packet import decode
from helpers.mqtt_recorder import Recorder

T0 = 1_767_225_600


def _speed_frames(db, minute_from: int, minute_to: int, hz: int = 10):
    m = db.get_message_by_name("VEHICLE_SPEED")
    for i in range(minute_from * 60 * hz, minute_to * 60 * hz):
        data = m.encode({s.name: 0 for s in m.signals} | {"VehicleSpeed": (i % 500) / 10}, strict=False)
        yield can.Message(timestamp=T0 + i / hz, arbitration_id=m.frame_id, is_extended_id=False, data=data)


class GatewayThread:
    """A Gateway on its own asyncio loop in a thread (the brokers here are managed synchronously)."""

    def __init__(self, config: GatewayConfig, bus=None) -> None:
        self.gw = Gateway(config, bus=bus)
        self.thread = threading.Thread(target=lambda: asyncio.run(self.gw.run()), daemon=True)
        self.thread.start()

    def stop(self, timeout: float = 40) -> None:
        self.gw.stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive()


def _telemetry(messages):
    return [decode(p) for t, p, _ in messages if t.endswith("/telemetry")]


def test_broker_outage_loses_nothing_and_backlog_arrives_in_order(tmp_path):
    db = dbc.load(dbc.REFERENCE_DBC)
    port = free_port()
    persist = tmp_path / "mosquitto"
    persist.mkdir()
    prefix = f"t{uuid.uuid4().hex[:6]}"
    channel = uuid.uuid4().hex
    sim = can.Bus(interface="virtual", channel=channel, preserve_timestamps=True)
    gw_bus = can.Bus(interface="virtual", channel=channel, preserve_timestamps=True)
    config = GatewayConfig(vehicle_id="VOUT", broker=None, outbox_path=tmp_path / "outbox.sqlite", interface="virtual",
                           channel=channel, topic_prefix=prefix, status_interval_s=0.5)
    with private_mosquitto(port, persistence_dir=persist) as url:
        config = dataclasses.replace(config, broker=url)
        rec = Recorder(url, [f"{prefix}/+/telemetry", f"{prefix}/+/status"], client_id=f"rec-{prefix}")
        gt = GatewayThread(config, bus=gw_bus)
        for f in _speed_frames(db, 0, 2):
            sim.send(f)
        assert rec.wait_for(lambda ms: len(_telemetry(ms)) >= 1)
        assert rec.wait_for(lambda ms: any(t.endswith("/status") and json.loads(p)["state"] == "online" for t, p, _ in ms))
    # broker down: packets keep being made and wait in the outbox
    for f in _speed_frames(db, 2, 5):
        sim.send(f)
    assert until(lambda: gt.gw.stats.packets_made >= 4, 30)
    assert gt.gw.outbox.depth >= 2  # made while the broker was down (one more if the idle flush came first)
    with private_mosquitto(port, persistence_dir=persist):
        assert rec.wait_for(lambda ms: len({p.seq for p in _telemetry(ms)}) >= 4, timeout=40)
        for f in _speed_frames(db, 5, 6):
            sim.send(f)
        gt.stop()
        assert rec.wait_for(lambda ms: json.loads([p for t, p, _ in ms if t.endswith("/status")][-1])["state"] == "offline")
        rec.close()
    sim.shutdown()
    gw_bus.shutdown()
    packets = _telemetry(rec.messages)
    first_seen = []
    for p in packets:
        if p.key not in {q.key for q in first_seen}:
            first_seen.append(p)
    assert [p.seq for p in first_seen] == list(range(6))  # every packet, in order, once after dedupe
    assert [p.start_time for p in first_seen] == [T0 + 60 * i for i in range(6)]
    assert gt.gw.publisher.stats.backlog_published >= 2
    assert gt.gw.publisher.stats.connects >= 2
    online = [json.loads(p) for t, p, _ in rec.messages if t.endswith("/status") and json.loads(p)["state"] == "online"]
    status = online[-1]
    assert status["vehicle_id"] == "VOUT" and status["boot_id"] == gt.gw.boot_id.hex()
    assert status["versions"]["dcm"] and status["schema"] == gt.gw.schema.fingerprint.hex()
    assert {"depth", "bytes", "budget", "budget_now", "evicted_packets", "evicted_bytes", "disk_evicted_packets",
            "disk_full"} <= set(status["outbox"])
    assert {"synchronised", "correction_ms", "steps_forward", "steps_backward"} <= set(status["clock"])
    assert status["frames"] > 0 and status["packets_made"] >= 4


@pytest.mark.parametrize("suffix", [".log", ".asc", ".blf"])
def test_replayed_logs_become_the_same_packets(tmp_path, broker, suffix):
    db = dbc.load(dbc.REFERENCE_DBC)
    log_path = tmp_path / f"drive{suffix}"
    frames = list(_speed_frames(db, 0, 3, hz=5))
    with can.Logger(log_path) as writer:
        for f in frames:
            writer.on_message_received(f)
    replay = LogReplay(log_path, speed=None)
    assert replay.recv(0).arbitration_id == frames[0].arbitration_id
    prefix = f"t{uuid.uuid4().hex[:6]}"
    rec = Recorder(broker, [f"{prefix}/+/telemetry"], client_id=f"rec-{prefix}")
    config = GatewayConfig(vehicle_id="VREPLAY", broker=broker, outbox_path=tmp_path / "o.sqlite", topic_prefix=prefix)
    gt = GatewayThread(config, bus=LogReplay(log_path, speed=None))
    gt.thread.join(60)  # a replay ends by itself
    assert rec.wait_for(lambda ms: len(ms) >= 3)
    rec.close()
    packets = sorted(_telemetry(rec.messages), key=lambda p: p.seq)
    assert [(p.start_time, p.rows) for p in packets] == [(T0, 60), (T0 + 60, 60), (T0 + 120, 60)]
    col = [c.name for c in gt.gw.schema.columns].index("VehicleSpeed")
    last_of_second = {int(f.timestamp): f for f in frames}
    for p in packets:
        for r in range(p.rows):
            expected = db.decode_message(frames[0].arbitration_id, last_of_second[p.start_time + r].data)["VehicleSpeed"]
            assert gt.gw.schema.columns[col].physical(p.values[col, r : r + 1])[0] == expected


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed")
def test_mutual_tls_with_client_certificates(tmp_path):
    d = tmp_path
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=dcm test CA", cwd=d)
    for name, cn in (("server", "127.0.0.1"), ("client", "VTLS")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={cn}", cwd=d)
        ext = d / f"{name}.ext"
        ext.write_text("subjectAltName=IP:127.0.0.1\n" if name == "server" else "extendedKeyUsage=clientAuth\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.crt", "-days", "2", "-extfile", str(ext), cwd=d)
    port = free_port()
    tls = [f"cafile {d}/ca.crt", f"certfile {d}/server.crt", f"keyfile {d}/server.key", "require_certificate true"]
    db = dbc.load(dbc.REFERENCE_DBC)
    channel = uuid.uuid4().hex
    with private_mosquitto(port, extra_listener_lines=tls) as url:
        broker = type(url)(url.host, url.port, tls=True)
        config = GatewayConfig(vehicle_id="VTLS", broker=broker, outbox_path=d / "o.sqlite", interface="virtual",
                               channel=channel, topic_prefix="tls", ca_file=str(d / "ca.crt"),
                               cert_file=str(d / "client.crt"), key_file=str(d / "client.key"))
        with can.Bus(interface="virtual", channel=channel, preserve_timestamps=True) as sim, \
                can.Bus(interface="virtual", channel=channel, preserve_timestamps=True) as gw_bus:
            gt = GatewayThread(config, bus=gw_bus)
            for f in _speed_frames(db, 0, 1, hz=2):
                sim.send(f)
            assert until(lambda: gt.gw.stats.packets_made >= 1 or gt.gw.source.stats.frames >= 120, 30)
            gt.stop()
        assert gt.gw.publisher.stats.published == 1 and gt.gw.outbox.depth == 0
        # the broker really demands a client certificate: without one the handshake fails
        bare = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        bare.tls_set(ca_certs=str(d / "ca.crt"))
        with pytest.raises((ssl.SSLError, OSError, RuntimeError)):  # TLS 1.3 may only fail after the handshake
            bare.connect(url.host, url.port)
            bare.loop(timeout=2)
            bare.publish("tls/x", b"x", qos=1).wait_for_publish(2)


def test_backlog_drains_in_order_while_live_packets_go_first(tmp_path, broker):
    from gateway.outbox import Outbox
    from gateway.publisher import Publisher, PublisherSettings

    prefix = f"t{uuid.uuid4().hex[:6]}"
    box = Outbox(tmp_path / "o.sqlite")
    for i in range(30):  # waited while the network was gone
        box.put(f"{prefix}/backlog", str(i).encode())
    rec = Recorder(broker, [f"{prefix}/#"], client_id=f"rec-{prefix}")
    pub = Publisher(box, PublisherSettings(broker=broker, client_id=f"pub-{prefix}", schema_topic=f"{prefix}/schema",
                                           schema_payload=b"{}", status_topic=f"{prefix}/status", backlog_rate=10),
                    status=lambda: {})

    async def main() -> None:
        task = asyncio.create_task(pub.run())
        assert await until_async(lambda: pub.stats.backlog_published >= 3, 30, interval=0.02)
        box.put(f"{prefix}/live", b"live")  # a packet made now
        pub.wake.set()
        assert await until_async(lambda: not box.depth, 30, interval=0.02), box.depth
        task.cancel()

    asyncio.run(main())
    assert rec.wait_for(lambda ms: sum(t.endswith(("/backlog", "/live")) for t, _, _ in ms) == 31)
    rec.close()
    box.close()
    order = [p.decode() for t, p, _ in rec.messages if t.endswith(("/backlog", "/live"))]
    backlog = [o for o in order if o != "live"]
    assert backlog == [str(i) for i in range(30)]  # in order, each once
    assert order.index("live") < order.index("29")  # the live packet did not wait for the backlog
    assert pub.stats.backlog_published == 30


def test_a_replay_is_a_python_can_bus_that_honours_timeouts_through_gaps(tmp_path):
    """A gap in the log does not block ``recv`` beyond its timeout; a shutdown ends the replay."""
    log_path = tmp_path / "gap.log"
    with can.Logger(log_path) as writer:
        for ts in (T0, T0 + 30):
            writer.on_message_received(can.Message(timestamp=ts, arbitration_id=0x100, data=b"\x01", is_extended_id=False))
    replay = LogReplay(log_path, speed=1.0)
    assert isinstance(replay, can.BusABC) and replay.recorded
    assert replay.recv(0).timestamp == T0
    assert replay.recv(timeout=0.05) is None  # the next frame is due in 30 s
    replay.shutdown()
    with pytest.raises(EOFError):
        replay.recv(timeout=0.05)
    fast = LogReplay(log_path, speed=None)
    assert [fast.recv(0).timestamp for _ in range(2)] == [T0, T0 + 30]
    with pytest.raises(EOFError):
        fast.recv(0)
    fast.shutdown()
