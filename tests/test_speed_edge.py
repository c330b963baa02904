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
