"""Scale-out through MQTT v5 shared subscriptions: two sink workers, one broker, one lake.

Also pins down the Mosquitto behaviour the guarantee rests on: a QoS 1 message in flight to a
worker that dies stays in *that worker's* persistent session and is redelivered to it (same
client id, hence the same staging database, so its dedupe applies) when it comes back; the other
worker never receives it, and new messages keep being assigned to the offline session meanwhile.
"""
from __future__ import annotations

import asyncio
import time
import uuid

import duckdb
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import dbc
from cloud_sink.lake import mask_vehicle
from cloud_sink.service import Sink
from cloud_sink.gaps import union_gaps
from cloud_sink.staging import Staging
from dcm.testing import until, until_async
from minute_packet import encode

from test_sink import SECRET, _config, _packet, _publish


def test_two_workers_store_every_packet_exactly_once_in_the_union(tmp_path, broker, schema):
    prefix = f"s{uuid.uuid4().hex[:6]}"
    boot = uuid.uuid4().bytes
    vehicles = [f"FLEET{i}" for i in range(3)]
    sent = [(v, s) for s in range(40) for v in vehicles]
    items = [(f"{prefix}/{v}/telemetry", encode(_packet(schema, v, s, boot, rows=5)), False) for v, s in sent]
    configs = [_config(tmp_path, broker, prefix, dbc_paths=(dbc.REFERENCE_DBC,), share_group="sinks",
                       state_path=tmp_path / f"w{i}.sqlite", worker_id=f"w{i}", client_id=f"{prefix}-w{i}")
               for i in range(2)]

    async def main() -> list[Sink]:
        sinks = [Sink(c) for c in configs]
        tasks = [asyncio.create_task(s.run()) for s in sinks]
        for s in sinks:
            assert await asyncio.to_thread(s.intake.connected.wait, 10)
        await asyncio.to_thread(_publish, broker, items)
        await until_async(lambda: sum(s.stats.packets_staged for s in sinks) >= len(sent), 30)
        for s in sinks:
            s.stop()
        await asyncio.gather(*tasks)
        return sinks

    sinks = asyncio.run(main())
    staged = [s.stats.packets_staged for s in sinks]
    assert sum(staged) == len(sent) and min(staged) > 0, staged  # the broker shared the load
    assert sum(s.stats.packets_written for s in sinks) == len(sent)
    rows = duckdb.connect().execute(
        f"SELECT vehicle, seq, count(*), count(DISTINCT ts) FROM read_parquet('{tmp_path}/lake/**/*.parquet',"
        f" hive_partitioning = true, union_by_name = true) GROUP BY ALL ORDER BY ALL").fetchall()
    assert rows == sorted((mask_vehicle(SECRET, v), s, 5, 5) for v, s in sent)
    files = {p.name.split("-")[1] for p in (tmp_path / "lake").rglob("*.parquet")}
    assert files == {"w0", "w1"}  # worker ids keep file names apart
    # each worker alone sees holes; the union of the staging databases has none
    assert Staging(configs[0].state_path).keys.gaps() != []
    assert union_gaps([c.state_path for c in configs]) == []


def _member(broker, client_id: str, got: list, *, ack: bool) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, manual_ack=True)

    def on_message(client, userdata, msg):
        got.append(bytes(msg.payload))
        if ack:
            client.ack(msg.mid, msg.qos)

    c.on_message = on_message
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 600
    c.connect(broker.host, broker.port, clean_start=False, properties=props)
    c.loop_start()
    c.subscribe("$share/g/" + client_id.split("-")[0] + "/#", qos=1)
    return c


def test_mosquitto_redelivers_a_dead_members_messages_to_that_member_only(broker):
    topic = f"m{uuid.uuid4().hex[:6]}"
    got_a, got_b, got_a2 = [], [], []
    a = _member(broker, f"{topic}-a", got_a, ack=False)
    time.sleep(0.3)
    _publish(broker, [(f"{topic}/x", b"m1", False)])
    assert until(lambda: got_a == [b"m1"], 5)
    a.loop_stop()
    a.socket().close()  # dies without DISCONNECT and without acknowledging m1; its session persists
    b = _member(broker, f"{topic}-b", got_b, ack=True)
    time.sleep(0.5)
    _publish(broker, [(f"{topic}/x", b"m%d" % i, False) for i in range(2, 8)])
    assert until(lambda: len(got_b) >= 3, 5)
    time.sleep(0.3)
    assert b"m1" not in got_b and len(got_b) < 6  # round robin still includes the offline session
    a2 = _member(broker, f"{topic}-a", got_a2, ack=True)
    assert until(lambda: len(got_a2) + len(got_b) >= 7, 5)
    assert got_a2[0] == b"m1" and sorted(got_a2 + got_b) == [b"m%d" % i for i in range(1, 8)]
    for c in (a2, b):
        c.disconnect()
        c.loop_stop()
