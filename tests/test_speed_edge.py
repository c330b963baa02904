"""Edge triggers: the event packet codec, the trigger engine on decoded frames (rising edge, always,
minimum interval, pre/post capture), and a crash through a real gateway on a python-can bus into an alert."""
from __future__ import annotations

import pytest

import dbc
from gateway.decoder import frame_key
from gateway.triggers import TriggerEngine, TriggerError, TriggerSpec, triggers_from_config
from minute_packet import PacketDecodeError
from minute_packet.event_packet import EventPacket, decode, encode

DB = dbc.load(dbc.REFERENCE_DBC)
AIRBAG = DB.get_message_by_name("AIRBAG_STATUS")
SPEED = DB.get_message_by_name("VEHICLE_SPEED")
BOOT = b"\x07" * 16


def airbag(crash: int, severity: int = 0) -> tuple[int, bytes]:
    data = AIRBAG.encode({s.name: 0 for s in AIRBAG.signals} | {"CrashDetected": crash, "CrashSeverity": severity},
                         strict=False)
    return frame_key(AIRBAG.frame_id, AIRBAG.is_extended_frame), data


def speed(kmh: float) -> tuple[int, bytes]:
    data = SPEED.encode({s.name: 0 for s in SPEED.signals} | {"VehicleSpeed": kmh}, strict=False)
    return frame_key(SPEED.frame_id, SPEED.is_extended_frame), data


def engine(*specs: TriggerSpec) -> TriggerEngine:
    return TriggerEngine(DB, specs, vehicle_id="V1", model="reference-car", boot_id=BOOT)


def test_event_packet_round_trip_and_strict_decoding():
    p = EventPacket("V1", "reference-car", BOOT, 3, "crash", 1_764_000_000_123, "CrashDetected == 1", 0, 2000, 500,
                    {"VehicleSpeed": ((-20, -10, 0), (50.0, 49.5, 20.25))})
    data = encode(p)
    assert decode(data).same_content(p)
    for bad, reason in [(b"MP\x01\x00" + data[4:], "bad_magic"), (data[:2] + b"\x09" + data[3:], "unsupported_version"),
                        (data[:4] + b"junk", "corrupt_compression"), (data[:-3], "corrupt_compression")]:
        with pytest.raises(PacketDecodeError) as err:
            decode(bad)
        assert err.value.reason == reason


def test_rising_edge_fires_once_per_change_with_the_frame_time_to_the_millisecond():
    e = engine(TriggerSpec("crash", "CrashDetected == 1"))
    t = 1_764_000_000.0
    out = []
    for i, crash in enumerate([0, 0, 1, 1, 1, 0, 1]):
        out += e.on_frame(t + i * 0.020 + 0.0004, *airbag(crash))
    assert [(p.trigger, p.time_ms - int(t * 1000), p.part) for p in out] == [("crash", 40, 0), ("crash", 120, 0)]
    assert [p.seq for p in out] == [0, 1]


def test_always_mode_respects_the_minimum_interval():
    e = engine(TriggerSpec("fast", "VehicleSpeed > 100", mode="always", min_interval_s=1.0))
    t0 = 1_764_000_000.0
    fired = [p.time_ms for i in range(300) for p in e.on_frame(t0 + i * 0.01, *speed(120.0))]
    assert [ms - int(t0 * 1000) for ms in fired] == [0, 1000, 2000]
    assert e.stats.suppressed == 300 - 3


def test_pre_and_post_trigger_capture_at_full_rate():
    e = engine(TriggerSpec("crash", "rising(CrashDetected == 1)", capture=("VehicleSpeed",), before_s=0.05,
                           after_s=0.03))
    t0 = 1_764_000_000.0
    out = []
    for i in range(20):  # speed every 10 ms, the crash flag at 100 ms
        t = t0 + i * 0.01
        out += e.on_frame(t, *speed(100.0 - i))
        if i == 10:
            out += e.on_frame(t + 0.001, *airbag(1, 4))
    part0, part1 = out
    assert part0.part == 0 and part0.time_ms == int(t0 * 1000) + 101
    assert part0.signals["VehicleSpeed"] == ((-41, -31, -21, -11, -1), (94.0, 93.0, 92.0, 91.0, 90.0))  # 50 ms back
    assert part1.part == 1 and part1.time_ms == part0.time_ms and part1.seq == part0.seq + 1
    assert part1.signals["VehicleSpeed"] == ((9, 19, 29), (89.0, 88.0, 87.0))


def test_duration_conditions_run_in_real_time_on_frames():
    e = engine(TriggerSpec("slow", "VehicleSpeed < 5 for 300 ms"))
    t0 = 1_764_000_000.0
    fired = [p.time_ms - int(t0 * 1000) for i in range(60) for p in e.on_frame(t0 + i * 0.01, *speed(2.0))]
    assert fired == [300]


def test_trigger_config_errors():
    with pytest.raises(TriggerError, match=r"\[0\].condition: expected"):
        triggers_from_config([{"name": "x", "condition": "a >"}])
    with pytest.raises(TriggerError, match=r"\[0\].mode: must be one of"):
        triggers_from_config([{"name": "x", "condition": "a > 1", "mode": "edge"}])
    with pytest.raises(TriggerError, match="signal 'Nope' is not in the DBC"):
        engine(*triggers_from_config([{"name": "x", "condition": "Nope > 1"}]))
    specs = triggers_from_config([{"name": "c", "condition": 'CrashDetected == 1', "capture": ["VehicleSpeed"],
                                   "before_s": 5, "after_s": 2, "min_interval_s": 10}])
    assert specs == (TriggerSpec("c", "CrashDetected == 1", "rising", 10.0, ("VehicleSpeed",), 5.0, 2.0),)


def test_a_crash_frame_through_a_real_gateway_becomes_an_alert_at_once(tmp_path, broker):
    import asyncio
    import json
    import threading
    import time
    import uuid

    import can

    from dcm.testing import until, until_async
    from gateway.config import GatewayConfig
    from gateway.service import Gateway
    from speed_layer.service import RulesService
    from speed_layer.service_config import Broker, ServiceConfig
    from speed_layer.store import Store

    from helpers.mqtt_recorder import Recorder

    prefix = f"e{uuid.uuid4().hex[:6]}"
    channel = f"edge-{uuid.uuid4().hex[:8]}"
    recorder = Recorder(broker, [f"{prefix}/+/alerts", f"{prefix}/+/events"], client_id=f"{prefix}-rec")
    rules = RulesService(ServiceConfig(broker=Broker(broker.host, broker.port), state_path=tmp_path / "rules.sqlite",
                                       topic_prefix=prefix, client_id=f"{prefix}-rules",
                                       dbc_paths=(dbc.REFERENCE_DBC,)))
    thread = threading.Thread(target=rules.run)
    thread.start()
    assert rules.connected.wait(10)
    specs = triggers_from_config([{"name": "crash", "condition": "rising(CrashDetected == 1)",
                                   "capture": ["VehicleSpeed"], "before_s": 1.0, "after_s": 0.5}])
    base = time.time() - 3.0
    crash_at = base + 2.012  # the AIRBAG_STATUS frame after speed frame 201

    async def main() -> Gateway:
        gw_bus = can.Bus(interface="virtual", channel=channel, preserve_timestamps=True)
        gw = Gateway(GatewayConfig(vehicle_id="VEDGE", broker=broker, outbox_path=tmp_path / "outbox.sqlite",
                                   interface="virtual", channel=channel, topic_prefix=prefix, triggers=specs),
                     bus=gw_bus)
        task = asyncio.create_task(gw.run())
        with can.Bus(interface="virtual", channel=channel, preserve_timestamps=True) as sim:
            for i in range(300):  # VehicleSpeed every 10 ms, AIRBAG_STATUS every 20 ms, the crash out of cycle
                t = base + i * 0.01
                key, data = speed(80.0 - i * 0.1)
                sim.send(can.Message(arbitration_id=SPEED.frame_id, data=data, timestamp=t, is_extended_id=False))
                if i % 2 == 0 or i == 201:
                    crashed = int(i >= 201)
                    _, adata = airbag(crashed, 4 * crashed)
                    sim.send(can.Message(arbitration_id=AIRBAG.frame_id, data=adata, timestamp=t + 0.002,
                                         is_extended_id=False))
        await until_async(lambda: gw.stats.events_made >= 2, 30)
        gw.stop()
        await task
        gw_bus.shutdown()
        return gw

    gw = asyncio.run(main())
    store = Store(tmp_path / "rules.sqlite")
    try:
        def edge_alert():
            return [a for a in store.alerts() if a["rule"] == "edge"]
        assert until(lambda: len(edge_alert()) == 1 and "after" in edge_alert()[0]["details"], 20)
    finally:
        rules.stop()
        thread.join(30)
    (alert,) = edge_alert()
    d = alert["details"]
    assert alert["kind"] == "crash" and d["time_ms"] == int(round(crash_at * 1000))
    offsets, values = d["before"]["VehicleSpeed"]["offsets_ms"], d["before"]["VehicleSpeed"]["values"]
    assert len(offsets) == 100 and -1000 <= offsets[0] and offsets[-1] == -2 and values[-1] == pytest.approx(59.9)
    assert len(d["after"]["VehicleSpeed"]["offsets_ms"]) == 50
    assert gw.triggers.stats.fired == 1
    events = [decode(p) for t, p, _ in recorder.messages if t.endswith("/events")]
    assert [(e.part, e.time_ms) for e in events] == [(0, d["time_ms"]), (1, d["time_ms"])]
    assert until(lambda: any(t == f"{prefix}/VEDGE/alerts" and json.loads(p)["id"] == alert["id"]
                             for t, p, _ in recorder.messages), 10)
    recorder.close()


def test_gateway_config_reads_triggers_and_check_config_validates_their_signals(tmp_path):
    from gateway.config import ConfigError, check, load

    base = 'vehicle_id = "V1"\n[mqtt]\nurl = "mqtt://127.0.0.1:1883"\n[outbox]\npath = "o.sqlite"\n'
    good = tmp_path / "good.toml"
    good.write_text(base + '[[triggers]]\nname = "crash"\ncondition = "rising(CrashDetected == 1)"\n'
                    'capture = ["VehicleSpeed"]\nbefore_s = 5\n')
    config = load(good)
    assert config.triggers == (TriggerSpec("crash", "rising(CrashDetected == 1)", capture=("VehicleSpeed",),
                                           before_s=5.0),)
    assert check(config, str(good))["vehicle_id"] == "V1"
    bad = tmp_path / "bad.toml"
    bad.write_text(base + '[[triggers]]\nname = "x"\ncondition = "Nope > 1"\n')
    with pytest.raises(ConfigError, match="triggers: trigger 'x': signal 'Nope' is not in the DBC"):
        check(load(bad), str(bad))
    bad.write_text(base + '[[triggers]]\nname = "x"\ncondition = "a >"\n')
    with pytest.raises(ConfigError, match=r"bad.toml: triggers: \[0\].condition: expected"):
        load(bad)


def test_event_packets_that_waited_offline_go_out_ahead_of_the_backlog(tmp_path, broker):
    import asyncio
    import uuid

    from dcm.testing import until, until_async
    from gateway.outbox import Outbox
    from gateway.publisher import Publisher, PublisherSettings

    from helpers.mqtt_recorder import Recorder

    prefix = f"b{uuid.uuid4().hex[:6]}"
    recorder = Recorder(broker, [f"{prefix}/+/telemetry", f"{prefix}/+/events"], client_id=f"{prefix}-rec")
    outbox = Outbox(tmp_path / "o.sqlite")
    for i in range(6):  # what piled up while offline: minute packets, then an event, then more packets
        outbox.put(f"{prefix}/V1/telemetry", b"minute %d" % i)
        if i == 3:
            outbox.put(f"{prefix}/V1/events", b"event")
    settings = PublisherSettings(broker=broker, client_id=f"{prefix}-gw", schema_topic=f"{prefix}/schemas/00",
                                 schema_payload=b"{}", status_topic=f"{prefix}/V1/status", backlog_rate=5.0)
    publisher = Publisher(outbox, settings, status=lambda: {})

    async def main() -> None:
        task = asyncio.create_task(publisher.run())
        await until_async(lambda: outbox.depth == 0, 20)
        task.cancel()
    asyncio.run(main())
    assert until(lambda: len(recorder.messages) == 7, 10)
    assert [p for _, p, _ in recorder.messages] == [b"event"] + [b"minute %d" % i for i in range(6)]
    recorder.close()
