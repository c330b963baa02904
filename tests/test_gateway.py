"""Gateway pieces with real files, a real python-can virtual bus and a real Mosquitto."""
from __future__ import annotations

import asyncio
import threading
import uuid

import can
import paho.mqtt.client as mqtt
import pytest

import dbc
from dcm.testing import until_async
from gateway.outbox import Outbox, OutboxError
from gateway.service import Gateway, GatewayConfig, GatewayError
from minute_packet import decode

T0 = 1_767_225_600


def test_outbox_survives_reopen_and_keeps_order(tmp_path):
    box = Outbox(tmp_path / "o.sqlite")
    for i in range(5):
        box.put("t", bytes([i]) * 10)
    first = box.peek(2)
    box.remove([first[0].id])
    box.close()
    again = Outbox(tmp_path / "o.sqlite")
    assert again.depth == 4 and again.bytes == 40
    assert [item.payload[0] for item in again.peek(10)] == [1, 2, 3, 4]


def test_outbox_budget_evicts_oldest_and_counts(tmp_path, caplog):
    box = Outbox(tmp_path / "o.sqlite", max_bytes=100)
    for i in range(12):
        box.put("t", bytes([i]) * 10)
    assert [item.payload[0] for item in box.peek(20)] == list(range(2, 12))
    assert (box.stats.evicted_packets, box.stats.evicted_bytes) == (2, 20)
    assert any("full" in r.message for r in caplog.records)
    with pytest.raises(OutboxError):
        box.put("t", b"x" * 101)


def _frames(db, seconds: int):
    """Every message of the DBC at 10 Hz with a value that changes each second."""
    for t10 in range(seconds * 10):
        for m in db.messages:
            values = {}
            for s in m.signals:
                lo = s.minimum if s.minimum is not None else 0
                hi = s.maximum if s.maximum is not None else lo + 10
                values[s.name] = lo + (hi - lo) * ((t10 // 10) % 7) / 7
            if m.is_multiplexed():
                mux = next(s for s in m.signals if s.is_multiplexer)
                branch = sorted({i for s in m.signals for i in (s.multiplexer_ids or ())})[t10 % 2]
                values = {s.name: values[s.name] for s in m.signals
                          if not s.multiplexer_ids or branch in s.multiplexer_ids}
                values[mux.name] = branch
            yield can.Message(timestamp=T0 + t10 / 10, arbitration_id=m.frame_id, is_extended_id=m.is_extended_frame,
                              data=m.encode(values, scaling=True, strict=False))


def test_gateway_publishes_minute_packets_over_mqtt(tmp_path, broker):
    db = dbc.load(dbc.REFERENCE_DBC)
    channel = f"gw-{uuid.uuid4().hex[:8]}"
    prefix = f"t{uuid.uuid4().hex[:6]}"
    received: list[bytes] = []
    got_all = threading.Event()

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    sub.on_message = lambda c, u, m: (received.append(m.payload), len(received) >= 3 and got_all.set())
    sub.connect(broker.host, broker.port)
    sub.subscribe(f"{prefix}/+/telemetry", qos=1)
    sub.loop_start()

    async def main() -> Gateway:
        gw_bus = can.Bus(interface="virtual", channel=channel, preserve_timestamps=True)
        gw = Gateway(GatewayConfig(vehicle_id="VGW1", broker=broker, outbox_path=tmp_path / "outbox.sqlite",
                                   interface="virtual", channel=channel, topic_prefix=prefix), bus=gw_bus)
        task = asyncio.create_task(gw.run())
        with can.Bus(interface="virtual", channel=channel, preserve_timestamps=True) as sim:
            for frame in _frames(db, 150):
                sim.send(frame)
        await until_async(lambda: gw.source.stats.frames >= sent, 30)  # the reader catching up
        gw.stop()
        await task
        gw_bus.shutdown()
        return gw

    sent = sum(1 for _ in _frames(db, 150))
    gw = asyncio.run(main())
    assert got_all.wait(10)
    sub.loop_stop()
    sub.disconnect()
    packets = sorted((decode(p) for p in received), key=lambda p: p.seq)
    assert [(p.seq, p.start_time, p.rows) for p in packets] == [(0, T0, 60), (1, T0 + 60, 60), (2, T0 + 120, 30)]
    assert gw.source.stats.frames == sent
    assert gw.publisher.stats.published == 3
    assert gw.outbox.depth == 0
    assert all(p.vehicle_id == "VGW1" and p.fingerprint == gw.schema.fingerprint for p in packets)


class FailingBus(can.BusABC):
    """Delivers some frames, then its driver fails with an error no one anticipated."""

    def __init__(self, frames) -> None:
        super().__init__(channel="failing")
        self._frames = iter(frames)

    def _recv_internal(self, timeout):
        msg = next(self._frames, None)
        if msg is None:
            raise RuntimeError("driver exploded")
        return msg, True

    def send(self, msg, timeout=None) -> None:
        raise NotImplementedError


def test_a_failing_reader_keeps_what_it_sampled_and_stops_loudly(tmp_path, broker):
    db = dbc.load(dbc.REFERENCE_DBC)
    frames = list(_frames(db, 20))  # 20 s: no minute is complete
    bus = FailingBus(frames)
    gw = Gateway(GatewayConfig(vehicle_id="VFAIL", broker=broker, outbox_path=tmp_path / "o.sqlite",
                               topic_prefix=f"t{uuid.uuid4().hex[:6]}"), bus=bus)
    with pytest.raises(GatewayError, match="driver exploded"):
        asyncio.run(gw.run())
    bus.shutdown()
    assert gw.stats.packets_made == 1 and gw.stats.rows_made == 20  # the open minute was flushed
    assert gw.publisher.stats.published == 1


def test_idle_bus_sends_the_open_minute_without_waiting_for_the_next(tmp_path, broker):
    db = dbc.load(dbc.REFERENCE_DBC)
    channel = uuid.uuid4().hex

    async def main() -> Gateway:
        gw_bus = can.Bus(interface="virtual", channel=channel, preserve_timestamps=True)
        gw = Gateway(GatewayConfig(vehicle_id="VIDLE", broker=broker, outbox_path=tmp_path / "o.sqlite",
                                   topic_prefix=f"t{uuid.uuid4().hex[:6]}", idle_flush_s=0.3), bus=gw_bus)
        task = asyncio.create_task(gw.run())
        with can.Bus(interface="virtual", channel=channel, preserve_timestamps=True) as sim:
            for frame in _frames(db, 10):
                sim.send(frame)
            # the bus falls silent (ignition off); no stop() is called
            await until_async(lambda: gw.publisher.stats.published, 10)
        published_while_running = gw.publisher.stats.published
        gw.stop()
        await task
        gw_bus.shutdown()
        assert published_while_running == 1
        return gw

    gw = asyncio.run(main())
    assert gw.stats.packets_made == 1 and gw.stats.rows_made == 10


def test_a_failed_put_leaves_counters_and_rows_as_they_were(tmp_path):
    import sqlite3

    box = Outbox(tmp_path / "o.sqlite", max_bytes=100)
    for i in range(10):
        box.put("t", bytes([i]) * 10)
    con = sqlite3.connect(tmp_path / "o.sqlite")
    con.execute("CREATE TRIGGER refuse BEFORE INSERT ON outbox BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    con.commit()
    con.close()
    with pytest.raises(OutboxError, match="disk full"):
        box.put("t", b"x" * 30)  # would evict three packets first
    assert (box.depth, box.bytes, box.stats.evicted_packets) == (10, 100, 0)
    assert len(box.peek(20)) == 10
