"""Each built-in rule on crafted 1 Hz rows at its boundaries: just under, at, just over the threshold;
episodes across a minute boundary; GNSS jitter on a fence."""
from __future__ import annotations

import json
import math

import pytest

import dbc
from minute_packet import schema_from_dbc
from speed_layer.builtin_body import dtc_name
from speed_layer.builtin_motion import G
from speed_layer.config import load_rules
from speed_layer.engine import VehicleRules, rows_from_columns
from speed_layer.geo import EARTH_RADIUS_M
from speed_layer.rules import alert_id, step

from helpers.speed_packets import make_packet

T0 = 1_764_000_000 - 1_764_000_000 % 60  # a minute boundary


def rule(name: str, text: str = ""):
    cfg = load_rules(text=f"builtins = false\n[rules.{name}]\n{text}")
    return {r.name: r for r in cfg.rules}[name]


def changes(r, rows, vehicle="V", choices=None):
    stepper = r.bind(vehicle, choices or {})
    state: dict = {}
    out = []
    for t, values in rows:  # one row at a time through a JSON checkpoint, like the service
        state, ch = step(stepper, json.loads(json.dumps(state)), [(t, values)])
        out += ch
    return out


def summary(chs):
    return [(c.kind, c.status, c.start, c.end) for c in chs]


PARKED = {"engine": 0, "ignition": 0, "door_fl": 0, "door_fr": 0, "door_rl": 0, "door_rr": 0}


@pytest.mark.parametrize("seconds, alerts", [(179, 0), (180, 1), (181, 1)])
def test_headlights_left_on_after_n_minutes(seconds, alerts):
    r = rule("headlights_left_on", "minutes = 3")
    rows = [(T0 + i, dict(PARKED, lights=1)) for i in range(seconds)]
    got = changes(r, rows)
    assert summary(got) == [("headlights_left_on", "open", T0, None)] * alerts


def test_headlights_close_when_a_door_opens_and_need_every_door_closed():
    r = rule("headlights_left_on", "minutes = 1")
    rows = [(T0 + i, dict(PARKED, lights=1)) for i in range(70)] + [(T0 + 70, dict(PARKED, lights=1, door_rl=2))]
    assert summary(changes(r, rows)) == [("headlights_left_on", "open", T0, None),
                                         ("headlights_left_on", "closed", T0, T0 + 69)]
    ajar = [(T0 + i, dict(PARKED, lights=1, door_fr=1)) for i in range(100)]
    assert changes(r, ajar) == []
    running = [(T0 + i, dict(PARKED, lights=1, engine=2)) for i in range(100)]
    assert changes(r, running) == []


@pytest.mark.parametrize("name, threshold", [("battery_low", 12.20), ("battery_critical", 12.05)])
@pytest.mark.parametrize("delta, alerts", [(0.01, 0), (0.0, 0), (-0.01, 1)])
def test_battery_low_and_critical_below_threshold_with_engine_off(name, threshold, delta, alerts):
    r = rule(name)
    rows = [(T0 + i, {"voltage": round(threshold + delta, 2), "engine": 0}) for i in range(90)]
    got = changes(r, rows)
    assert summary(got) == [(name, "open", T0, None)] * alerts
    running = [(T0 + i, {"voltage": threshold - 0.5, "engine": 2}) for i in range(90)]
    assert changes(r, running) == []


def test_battery_low_is_debounced_and_hysteresis_keeps_one_episode():
    r = rule("battery_low", "for_s = 60\nhysteresis_v = 0.05")
    short = [(T0 + i, {"voltage": 12.1, "engine": 0}) for i in range(59)]
    assert changes(r, short) == []
    jitter = [(T0 + i, {"voltage": 12.19 if i % 2 else 12.23, "engine": 0}) for i in range(200)]
    got = changes(r, [(T0 - 1, {"voltage": 12.19, "engine": 0})] + jitter)
    assert summary(got) == [("battery_low", "open", T0 - 1, None)]


def test_battery_decline_trend_over_days():
    r = rule("battery_decline", "rest_s = 0\nmin_buckets = 4\nmin_samples = 3")
    day = 86400

    def days(volts):
        return [(T0 + d * day + i, {"voltage": v, "engine": 0}) for d, v in enumerate(volts) for i in range(3)]
    assert changes(r, days([12.6, 12.6, 12.59, 12.6, 12.6, 12.6])) == []
    got = changes(r, days([12.6, 12.57, 12.54, 12.51, 12.48, 12.45]))
    assert [(c.kind, c.status) for c in got] == [("battery_decline", "open")]
    assert got[0].start == (T0 // day) * day and got[0].details["slope_v_per_bucket"] == pytest.approx(-0.03)
    assert changes(r, days([12.6, 12.59, 12.58, 12.57, 12.56])) == []  # -0.01 V/day: within tolerance


@pytest.mark.parametrize("speed, seconds, alerts", [
    (130.0, 30, 0), (130.01, 9, 0), (130.01, 10, 1), (131.0, 11, 1)])
def test_speeding_needs_the_limit_exceeded_for_the_minimal_duration(speed, seconds, alerts):
    r = rule("speeding", "limit_kmh = 130\nmin_duration_s = 10")
    rows = [(T0 + i, {"speed": speed}) for i in range(seconds)] + [(T0 + seconds, {"speed": 100.0})]
    got = changes(r, rows)
    assert summary(got) == [("speeding", "open", T0, None), ("speeding", "closed", T0, T0 + seconds - 1)][:2 * alerts]
    if alerts:
        assert got[-1].details["peak_kmh"] == speed
        assert got[-1].details["distance_km"] == pytest.approx(speed * seconds / 3600, abs=1e-4)


def test_speeding_limit_per_vehicle_and_per_geofence():
    text = '''builtins = false
[geofences.school]
circle = { lat = 48.0, lon = 11.0, radius_m = 300 }
speed_limit_kmh = 30
[rules.speeding]
limit_kmh = 130
min_duration_s = 3
vehicles = { TEEN = 90 }
'''
    r = {x.name: x for x in load_rules(text=text).rules}["speeding"]
    highway = [(T0 + i, {"speed": 100.0, "lat": 48.5, "lon": 11.0}) for i in range(5)]
    assert changes(r, highway, vehicle="ADULT") == []
    assert [c.details["limit_kmh"] for c in changes(r, highway, vehicle="TEEN")] == [90]
    school = [(T0 + i, {"speed": 40.0, "lat": 48.0, "lon": 11.0}) for i in range(5)]
    assert [c.details["limit_kmh"] for c in changes(r, school, vehicle="ADULT")] == [30]


@pytest.fixture(scope="module")
def reference_schema():
    return schema_from_dbc(dbc.load(dbc.REFERENCE_DBC))


def test_an_episode_across_a_minute_boundary_is_one_alert(reference_schema):
    # speeding from 10:00:50 to 10:01:20 in two minute packets
    cfg = load_rules(text="builtins = false\n[rules.speeding]\nlimit_kmh = 130\nmin_duration_s = 10")
    vr = VehicleRules(cfg, "V", reference_schema)
    speeds = [100.0] * 50 + [150.0] * 31 + [100.0] * 39
    p1 = make_packet(reference_schema, "V", 0, T0, {"VehicleSpeed": speeds[:60]})
    p2 = make_packet(reference_schema, "V", 1, T0 + 60, {"VehicleSpeed": speeds[60:]})
    state: dict = {}
    got = vr.apply(state, p1)
    state = json.loads(json.dumps(state))
    got += vr.apply(state, p2)
    assert summary(got) == [("speeding", "open", T0 + 50, None), ("speeding", "closed", T0 + 50, T0 + 80)]
    assert {alert_id("V", c.rule, c.episode) for c in got} == {alert_id("V", "speeding", str(T0 + 50))}
    assert got[-1].details["distance_km"] == pytest.approx(31 * 150 / 3600, abs=1e-3)


def _offset(lat: float, lon: float, north_m: float) -> tuple[float, float]:
    return lat + math.degrees(north_m / EARTH_RADIUS_M), lon


@pytest.mark.parametrize("hysteresis, flaps", [(0, True), (25, False)])
def test_geofence_exit_with_gnss_jitter_on_the_boundary(hysteresis, flaps):
    text = f'''builtins = false
[geofences.depot]
circle = {{ lat = 48.0, lon = 11.0, radius_m = 800 }}
hysteresis_m = {hysteresis}
[rules.geofence]
'''
    r = {x.name: x for x in load_rules(text=text).rules}["geofence"]
    # parked inside, then creeping along the boundary with +-8 m of jitter, then leaving for good
    north = [0.0] * 5 + [800 + (8 if i % 2 else -8) for i in range(40)] + [800 + 30 * i for i in range(2, 12)]
    rows = [(T0 + i, dict(zip(("lat", "lon"), _offset(48.0, 11.0, n)))) for i, n in enumerate(north)]
    got = changes(r, rows)
    kinds = [c.kind for c in got]
    if flaps:
        assert len(kinds) > 10  # what the hysteresis is for
    else:
        assert kinds == ["geofence_exit"] and got[0].start == T0 + 45 and got[0].status == "closed"


def test_geofence_enter_of_a_wkt_polygon_and_initial_fix_sets_membership_only():
    text = '''builtins = false
[geofences.yard]
wkt = "POLYGON ((11 48, 11.01 48, 11.01 48.01, 11 48.01, 11 48))"
hysteresis_m = 10
[rules.geofence]
'''
    r = {x.name: x for x in load_rules(text=text).rules}["geofence"]
    rows = [(T0, {"lat": 48.005, "lon": 11.005})]  # first fix inside: no alert
    rows += [(T0 + 1, {"lat": 48.005, "lon": 11.02}), (T0 + 2, {"lat": 48.005, "lon": 11.005})]
    assert [(c.kind, c.start, c.details["fence"]) for c in changes(r, rows)] == [
        ("geofence_exit", T0 + 1, "yard"), ("geofence_enter", T0 + 2, "yard")]


def test_dtc_new_and_cleared_by_set_difference():
    r = rule("dtc")
    empty = {"dtc0": 0, "dtc1": 0, "dtc2": 0, "dtc3": 0, "dtc_count": 0}
    one = dict(empty, dtc0=0x042000, dtc_count=1)
    two = dict(one, dtc1=0x030100, dtc_count=2)
    rows = [(T0, empty), (T0 + 1, one), (T0 + 2, one), (T0 + 3, two), (T0 + 4, dict(two, dtc_count=1)),
            (T0 + 5, empty)]
    got = changes(r, rows)
    assert [(c.kind, c.status, c.details["dtc"], c.start, c.end) for c in got] == [
        ("dtc_new", "open", "P0420-00", T0 + 1, None),
        ("dtc_new", "open", "P0301-00", T0 + 3, None),
        ("dtc_new", "closed", "P0301-00", T0 + 3, T0 + 4), ("dtc_cleared", "closed", "P0301-00", T0 + 4, T0 + 4),
        ("dtc_new", "closed", "P0420-00", T0 + 1, T0 + 5), ("dtc_cleared", "closed", "P0420-00", T0 + 5, T0 + 5)]
    # a stale slot beyond DtcActiveCount is not a DTC
    assert changes(r, [(T0, empty), (T0 + 1, dict(empty, dtc2=0x042000))]) == []
    # codes present at the first sight are the baseline, not new; clearing them is reported
    got = changes(r, [(T0, one), (T0 + 1, one), (T0 + 2, empty)])
    assert [(c.kind, c.status, c.start) for c in got] == [("dtc_new", "closed", T0), ("dtc_cleared", "closed", T0 + 2)]
    assert dtc_name(0xC10000) == "U0100-00"


def test_crash_is_one_alert_per_episode_with_its_severity():
    r = rule("crash")
    rows = [(T0, {"crash": 0}), (T0 + 1, {"crash": 1, "severity": 4}), (T0 + 2, {"crash": 1, "severity": 3})]
    got = changes(r, rows)
    assert summary(got) == [("crash", "open", T0 + 1, None)] and got[0].details["peak"] == 4


A_BRAKE = 0.38 * G  # m/s^2


@pytest.mark.parametrize("kmh_per_s, alerts", [
    (A_BRAKE * 3.6 - 0.05, 0), (A_BRAKE * 3.6 + 1e-9, 1), (A_BRAKE * 3.6 + 0.05, 1)])
def test_harsh_braking_at_its_threshold(kmh_per_s, alerts):
    r = rule("harsh_braking")
    rows = [(T0, {"speed": 80.0}), (T0 + 1, {"speed": 80.0 - kmh_per_s}), (T0 + 30, {"speed": 50.0})]
    got = changes(r, rows)
    assert summary(got) == [("harsh_braking", "open", T0, None), ("harsh_braking", "closed", T0, T0 + 1)][:2 * alerts]


def test_harsh_events_are_gated_by_speed_and_debounced():
    r = rule("harsh_acceleration")
    slow = [(T0, {"speed": 0.0}), (T0 + 1, {"speed": 19.0})]  # 5.3 m/s^2 but from standstill
    assert changes(r, slow) == []
    speeds = [30, 45, 46, 47, 62, 63]  # two harsh seconds 3 s apart: one episode
    rows = [(T0 + i, {"speed": float(v)}) for i, v in enumerate(speeds)] + [(T0 + 30, {"speed": 63.0})]
    got = changes(r, rows)
    assert summary(got) == [("harsh_acceleration", "open", T0, None), ("harsh_acceleration", "closed", T0, T0 + 4)]
    assert got[-1].details["peak_mps2"] == pytest.approx(15 / 3.6, abs=1e-3)


def test_harsh_cornering_from_speed_times_heading_rate():
    r = rule("harsh_cornering")
    v = 54.0  # 15 m/s: 0.38 g needs 14.2 deg/s
    rows = [(T0, {"speed": v, "heading": 355.0}), (T0 + 1, {"speed": v, "heading": 9.5})]  # across north
    assert [c.kind for c in changes(r, rows)] == ["harsh_cornering"]
    rows = [(T0, {"speed": v, "heading": 10.0}), (T0 + 1, {"speed": v, "heading": 23.0})]
    assert changes(r, rows) == []


def test_generic_condition_rule_on_the_reference_car(reference_schema):
    cfg = load_rules(text='''builtins = false
[rules.coolant_hot]
type = "condition"
condition = 'CoolantTemp > 110 and EngineState == "Running" for 60 s'
peak = "CoolantTemp"
''')
    vr = VehicleRules(cfg, "V", reference_schema)
    temps = [105.0] * 10 + [111.0, 112.0] * 40
    p = make_packet(reference_schema, "V", 0, T0, {"CoolantTemp": temps[:60], "EngineState": [2] * 60})
    p2 = make_packet(reference_schema, "V", 1, T0 + 60, {"CoolantTemp": temps[60:] + [100.0], "EngineState": [2] * 31})
    state: dict = {}
    got = vr.apply(state, p) + vr.apply(state, p2)
    assert summary(got) == [("condition", "open", T0 + 10, None), ("condition", "closed", T0 + 10, T0 + 89)]
    assert got[-1].details["peak"] == 112.0


def test_rules_whose_signals_the_schema_lacks_are_skipped(reference_schema):
    import dataclasses
    cols = tuple(c for c in reference_schema.columns if c.name not in ("LowBeamOn", "DtcCode2"))
    small = dataclasses.replace(reference_schema, columns=cols)
    vr = VehicleRules(load_rules(), "V", small)
    assert vr.skipped == {"headlights_left_on": "schema lacks LowBeamOn", "dtc": "schema lacks DtcCode2"}
    assert "crash" in vr.rules
    p = make_packet(small, "V", 0, T0, {"CrashDetected": [1] * 5})
    assert [c.kind for c in vr.apply({}, p)] == ["crash"]


def test_held_values_fill_the_seconds_a_slow_signal_is_absent(reference_schema):
    cfg = load_rules(text="builtins = false\nhold_s = 5\n[rules.crash]")
    vr = VehicleRules(cfg, "V", reference_schema)
    # crash flag seen once, then absent: held 5 s, then unknown (the episode closes)
    p = make_packet(reference_schema, "V", 0, T0, {"CrashDetected": [1] + [None] * 9})
    got = vr.apply({}, p)
    assert summary(got) == [("crash", "open", T0, None), ("crash", "closed", T0, T0 + 5)]
    assert rows_from_columns(T0, {"a": [1, None]}) == [(T0, {"a": 1}), (T0 + 1, {})]


def test_a_geofence_rule_can_be_limited_to_some_vehicles(reference_schema):
    cfg = load_rules(text='''builtins = false
[geofences.home]
circle = { lat = 48.0, lon = 11.0, radius_m = 100 }
[rules.teen_home]
type = "geofence"
vehicles = ["TEEN"]
''')
    assert VehicleRules(cfg, "TEEN", reference_schema).rules == ["teen_home"]
    assert VehicleRules(cfg, "OTHER", reference_schema).rules == [] and not VehicleRules(cfg, "OTHER", reference_schema).skipped
