"""The sink against a real Mosquitto and real Parquet/SQLite files."""
from __future__ import annotations

import asyncio
import uuid

import numpy as np
import paho.mqtt.client as mqtt
import pyarrow.dataset as ds

import dbc
from cloud_sink.lake import mask_vehicle
from cloud_sink.service import Sink, SinkConfig
from dcm.testing import until_async
from minute_packet import MinutePacket, encode

T0 = 1_767_225_600
SECRET = b"test-secret"


def _packet(schema, vehicle: str, seq: int, boot: bytes, rows: int = 60) -> MinutePacket:
    rng = np.random.default_rng(seq)
    n = len(schema.columns)
    values = rng.integers(0, 50, size=(n, rows), dtype=np.uint64)
    present = rng.random((n, rows)) > 0.1
    return MinutePacket(vehicle_id=vehicle, model="ref", boot_id=boot, seq=seq, start_time=T0 + 60 * seq,
                        fingerprint=schema.fingerprint, values=values, present=present)


def _publish(broker, items: list[tuple[str, bytes, bool]]) -> None:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.connect(broker.host, broker.port)
    c.loop_start()
    infos = [c.publish(topic, payload, qos=1, retain=retain) for topic, payload, retain in items]
    for info in infos:
        info.wait_for_publish(10)
    c.disconnect()
    c.loop_stop()


def _config(tmp_path, broker, prefix, **kw) -> SinkConfig:
    base = dict(broker=broker, lake_root=tmp_path / "lake", state_path=tmp_path / "state.sqlite",
                quarantine_dir=tmp_path / "quarantine", vehicle_secret=SECRET, topic_prefix=prefix,
                client_id=f"sink-{uuid.uuid4().hex[:6]}", roll_interval_s=0.2)
    base.update(kw)
    return SinkConfig(**base)


async def _run_sink(config: SinkConfig, until, timeout: float = 20.0) -> Sink:
    sink = Sink(config)
    task = asyncio.create_task(sink.run())
    await asyncio.to_thread(sink.intake.connected.wait, 10)
    await until(sink)
    await until_async(lambda: until.done(sink), timeout)
    sink.stop()
    await task
    return sink


class Publish:
    """Publish items once the sink is up, then wait for a condition on the sink."""

    def __init__(self, broker, items, done):
        self.broker, self.items, self.done = broker, items, done

    async def __call__(self, sink):
        await asyncio.to_thread(_publish, self.broker, self.items)


def _lake_rows(root, vehicle):
    table = ds.dataset(root, format="parquet", partitioning="hive").to_table()
    masked = mask_vehicle(SECRET, vehicle)
    return table.filter(ds.field("vehicle") == masked) if "vehicle" in table.column_names else table


def test_duplicates_bad_payloads_and_spoofed_topics(tmp_path, broker, schema):
    prefix = f"t{uuid.uuid4().hex[:6]}"
    boot = uuid.uuid4().bytes
    packets = [_packet(schema, "VEH1", seq, boot) for seq in range(3)]
    good = [encode(p) for p in packets]
    topic = f"{prefix}/VEH1/telemetry"
    items = [
        (topic, good[0], False),
        (topic, b"garbage", False),
        (topic, good[1], False),
        (topic, good[0], False),  # duplicate delivery
        (topic, good[2][: len(good[2]) // 2], False),  # truncated
        (f"{prefix}/VEH2/telemetry", good[2], False),  # spoofed: VEH1's packet on VEH2's topic
        (topic, good[2], False),
        (topic, good[1], False),  # duplicate again
    ]
    config = _config(tmp_path, broker, prefix, dbc_paths=(dbc.REFERENCE_DBC,))
    sink = asyncio.run(_run_sink(config, Publish(broker, items, lambda s: s.stats.packets_in >= 7 and s.stats.packets_written >= 3)))
    assert sink.stats.packets_written == 3
    assert sink.stats.duplicates == 2
    assert dict(sink.quarantine.by_reason) == {"bad_magic": 1, "corrupt_compression": 1, "vehicle_mismatch": 1}
    assert len(list((tmp_path / "quarantine").glob("*/*.bin"))) == 3
    table = _lake_rows(tmp_path / "lake", "VEH1")
    expected_rows = sum(int(p.present.any(axis=0).sum()) for p in packets)
    assert table.num_rows == expected_rows
    assert sorted(set(table.column("seq").to_pylist())) == [0, 1, 2]
    # values are the schema's physical values of what was sent
    col = schema.columns[0]
    got = {int(t.timestamp()): v for t, v in zip(table.column("ts").to_pylist(), table.column(col.name).to_pylist())}
    for p in packets:
        phys = col.physical(p.values[0])
        for r in range(p.rows):
            if p.present[0, r]:
                assert got[p.start_time + r] == phys[r]
            elif p.present[:, r].any():
                assert got[p.start_time + r] is None


def test_duplicates_are_dropped_across_restarts(tmp_path, broker, schema):
    prefix = f"t{uuid.uuid4().hex[:6]}"
    boot = uuid.uuid4().bytes
    payload = encode(_packet(schema, "VEH9", 0, boot))
    topic = f"{prefix}/VEH9/telemetry"
    config = _config(tmp_path, broker, prefix, dbc_paths=(dbc.REFERENCE_DBC,))
    first = asyncio.run(_run_sink(config, Publish(broker, [(topic, payload, False)], lambda s: s.stats.packets_written >= 1)))
    second = asyncio.run(_run_sink(config, Publish(broker, [(topic, payload, False)], lambda s: s.stats.duplicates >= 1)))
    assert (first.stats.packets_written, second.stats.packets_written, second.stats.duplicates) == (1, 0, 1)
    assert _lake_rows(tmp_path / "lake", "VEH9").num_rows == int(_packet(schema, "VEH9", 0, boot).present.any(axis=0).sum())


def test_unknown_schema_is_parked_until_the_schema_arrives(tmp_path, broker, schema):
    prefix = f"t{uuid.uuid4().hex[:6]}"
    payload = encode(_packet(schema, "VEH3", 0, uuid.uuid4().bytes))
    config = _config(tmp_path, broker, prefix)  # no DBC: the schema is not known up front
    parked = asyncio.run(_run_sink(config, Publish(broker, [(f"{prefix}/VEH3/telemetry", payload, False)],
                                                   lambda s: s.stats.packets_staged >= 1)))
    assert (parked.stats.packets_staged, parked.stats.packets_written) == (1, 0)
    schema_topic = f"{prefix}/schemas/{schema.fingerprint.hex()}"
    drained = asyncio.run(_run_sink(config, Publish(broker, [(schema_topic, schema.to_json(), True)],
                                                    lambda s: s.stats.packets_written >= 1)))
    assert drained.stats.schemas_learned == 1
    assert drained.stats.packets_written == 1
    assert _lake_rows(tmp_path / "lake", "VEH3").num_rows > 0
