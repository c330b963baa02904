"""Exactly once under duplicates, out-of-order arrival and replays: any delivery of a vehicle's packets
gives the alert table of the in-order run (property test), and what a worker notifies ends on it."""
from __future__ import annotations

import functools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dbc
from minute_packet import encode, schema_from_dbc
from speed_layer.config import load_rules
from speed_layer.sequencer import Sequencer, digest
from speed_layer.store import Store

from helpers.speed_packets import make_packet

T0 = 1_764_000_000 - 1_764_000_000 % 60
BOOT1, BOOT2 = b"\x01" * 16, b"\x02" * 16
RULES = load_rules(text="""builtins = false
[rules.speeding]
limit_kmh = 130
min_duration_s = 10
[rules.harsh_braking]
[rules.crash]
[rules.dtc]
""")


@functools.cache
def schema():
    return schema_from_dbc(dbc.load(dbc.REFERENCE_DBC))


@functools.cache
def fingerprint() -> bytes:
    return schema().fingerprint


def minute(i: int) -> dict[str, list]:
    """Minute i of a drive: speeding 00:50-02:20, a harsh stop in minute 3, a DTC from minute 4,
    a crash in minute 6 (after a gateway reboot at minute 5)."""
    speed = [100.0] * 60
    if i == 1:
        speed[50:] = [150.0] * 10
    if i == 2:
        speed[:20] = [150.0] * 20
    if i == 3:
        speed[30:] = [100.0 - 15 * k if k < 6 else 10.0 for k in range(30)]
    dtc = [0x042000 if i >= 4 else 0] * 60
    crash = [1 if i == 6 and s >= 10 else 0 for s in range(60)]
    return {"VehicleSpeed": speed, "DtcCode0": dtc, "DtcCode1": [0] * 60, "DtcCode2": [0] * 60,
            "DtcCode3": [0] * 60, "DtcActiveCount": [1 if i >= 4 else 0] * 60, "CrashDetected": crash,
            "CrashSeverity": [3] * 60}


@functools.cache
def packets(vehicle: str = "V") -> list[bytes]:
    out = []
    for i in range(8):
        boot, seq = (BOOT1, i) if i < 5 else (BOOT2, i - 5)
        out.append(encode(make_packet(schema(), vehicle, seq, T0 + 60 * i, minute(i), boot=boot)))
    return out


def run(deliveries: list[bytes], history: int = 100) -> tuple[list[dict], Sequencer]:
    store = Store(":memory:")
    seq = Sequencer(store, RULES, lambda fp: schema() if fp == fingerprint() else None, history=history)
    for data in deliveries:
        with store.transaction():
            seq.ingest(data)
            for alert_id, status, rec in seq.notifications():
                pass
    return store.alerts(), seq


@functools.cache
def in_order() -> tuple[tuple, ...]:
    alerts, _ = run(packets("V") + packets("W"))
    return tuple(tuple(sorted((k, str(v)) for k, v in a.items())) for a in alerts)


def as_set(alerts):
    return tuple(tuple(sorted((k, str(v)) for k, v in a.items())) for a in alerts)


def test_the_in_order_run_finds_every_episode_once():
    alerts, seq = run(packets("V"))
    got = sorted((a["kind"], a["status"], a["start"] - T0, None if a["end"] is None else a["end"] - T0) for a in alerts)
    assert got == [("crash", "closed", 370, 419), ("dtc_new", "open", 240, None),
                   ("harsh_braking", "closed", 139, 140),  # 150 -> 100 km/h at the end of the speeding
                   ("harsh_braking", "closed", 210, 215), ("speeding", "closed", 110, 139)]
    assert seq.store.counters() == {"applied": 8}


def test_duplicates_change_nothing():
    alerts, seq = run(packets("V") + packets("V")[::2] + packets("V"))
    assert as_set(alerts) == as_set(run(packets("V"))[0])
    assert seq.store.counters()["duplicates"] == 12


def test_a_late_packet_is_replayed_into_place():
    p = packets("V")
    alerts, seq = run([p[0], p[2], p[3], p[1], p[4], p[5], p[6], p[7]])
    assert as_set(alerts) == as_set(run(p)[0])
    assert seq.store.counters()["replays"] == 1 and seq.store.counters()["replayed_packets"] == 2


def test_beyond_the_history_bound_a_late_packet_is_counted_and_left_out():
    p = packets("V")
    alerts, seq = run(p[1:] + p[:1], history=3)
    assert seq.store.counters()["late_beyond_history"] == 1
    assert as_set(alerts) == as_set(run(p[1:], history=3)[0])  # as if it never came


def test_a_replay_that_removes_an_alert_notifies_a_retraction():
    # minute 2 alone looks like speeding from 02:00; with minute 1 the episode starts at 01:50
    p = packets("V")
    store = Store(":memory:")
    seq = Sequencer(store, RULES, lambda fp: schema())
    sent = []
    for data in (p[0], p[2], p[3], p[1]):
        with store.transaction():
            seq.ingest(data)
            sent += [(i, s) for i, s, rec in seq.notifications() if rec is None or rec["kind"] == "speeding"]
    from speed_layer.rules import alert_id
    early, late = alert_id("V", "speeding", str(T0 + 110)), alert_id("V", "speeding", str(T0 + 120))
    assert sent[0] == (late, "closed") and set(sent[1:]) == {(early, "closed"), (late, "retracted")}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(0, 15), max_size=8).flatmap(
    lambda dups: st.permutations(list(range(16)) + dups)))
def test_any_order_and_duplication_gives_the_in_order_alert_table(order):
    everything = packets("V") + packets("W")
    alerts, seq = run([everything[i] for i in order])
    assert as_set(alerts) == in_order()
    # the last notified version of every alert is its stored version
    notified = set(seq.store.db.execute("SELECT alert_id, status, digest FROM notified").fetchall())
    for a in alerts:
        assert (a["id"], a["status"], digest(a)) in notified


def test_packets_wait_for_their_schema():
    p = packets("V")
    store = Store(":memory:")
    known: dict = {}
    seq = Sequencer(store, RULES, known.get)
    with store.transaction():
        assert [seq.ingest(x) for x in p[:3]] == ["waiting"] * 3
    known[fingerprint()] = schema()
    with store.transaction():
        assert seq.schema_arrived(fingerprint()) == 3
    assert [a["kind"] for a in store.alerts()] == ["speeding", "harsh_braking"]


def test_rules_a_schema_cannot_serve_are_reported_once_per_vehicle():
    import dataclasses
    small = dataclasses.replace(schema(), columns=tuple(c for c in schema().columns if c.name != "CrashDetected"))
    fp = small.fingerprint
    store = Store(":memory:")
    seq = Sequencer(store, RULES, {fp: small}.get)
    for i in range(3):
        data = encode(make_packet(small, "V", i, T0 + 60 * i, {"VehicleSpeed": [100.0] * 60}))
        with store.transaction():
            assert seq.ingest(data) == "applied"
    assert store.db.execute("SELECT vehicle, rule, reason FROM skipped_rules").fetchall() == [
        ("V", "crash", "schema lacks CrashDetected")]
    assert store.counters()["rules_skipped"] == 1


def test_the_outbox_is_bounded_and_counts_what_it_drops():
    store = Store(":memory:")
    with store.transaction():
        dropped = [store.enqueue("webhook:a", f"id{i}", "open", b"{}", limit=3) for i in range(5)]
    assert dropped == [0, 0, 0, 1, 1]
    assert [r[1] for r in store.due("webhook:a", 10)] == ["id2", "id3", "id4"]
    assert store.outbox_depth("webhook:a") == 3 and store.outbox_depth("mqtt") == 0
