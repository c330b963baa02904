"""Fleet simulator: reproducibility, DBC ranges, and a run through Mosquitto into a real sink."""
from __future__ import annotations

import asyncio
import operator
import uuid

import duckdb
import numpy as np
import pytest

from cloud_sink.lake import mask_vehicle
from cloud_sink.service import Sink, SinkConfig
from dcm.testing import until_async
from minute_packet import decode
from simulator.faults import FaultInjector
from simulator.fleet_generator import FleetGenerator
from simulator.fleet_runner import FleetRun, FleetRunConfig
from simulator.fleet_scenarios import distance_m
from simulator.fleet_spec import SCENARIO_KINDS, FaultRates, FleetSpec, plan_fleet

T0 = 1_767_225_600
SECRET = b"fleet-test-secret"
OPS = {"==": operator.eq, "<=": operator.le, ">=": operator.ge, ">": operator.gt, "<": operator.lt}


def _spec(**kw) -> FleetSpec:
    base = dict(vehicles=24, duration_s=600, start_time=T0, seed=5, battery_decline_v_per_day=60.0)
    base.update(kw)
    return FleetSpec(**base)


def test_same_seed_same_manifest_and_packets():
    spec = _spec(faults=FaultRates(duplicate=0.05, corrupt=0.05, delay=0.05, reorder=0.05, disconnect=0.1))
    a, b = FleetRun(FleetRunConfig(spec)), FleetRun(FleetRunConfig(spec))
    a.run(), b.run()
    assert a.manifest == b.manifest
    assert a.manifest["complete"] and a.manifest["windows"] == 10
    other = FleetRun(FleetRunConfig(_spec(seed=6)))
    other.run()
    assert other.manifest["payload_sha256"] != a.manifest["payload_sha256"]
    # every scenario kind shows, once
    assert a.manifest["expected"]["events_by_kind"] == {k: 1 for k in SCENARIO_KINDS}


def test_values_within_dbc_ranges_and_physics_consistent():
    gen = FleetGenerator(_spec(vehicles=40, duration_s=300))
    windows = list(gen)
    assert {gw.group.model for gw in windows} == {"reference-car", "reference-car-2027"}
    fps = {m: s.fingerprint for m, s in gen.schemas.items()}
    assert len(set(fps.values())) == 2  # the 2027 model's extra signal changes the schema
    for gw in windows:
        schema = gen.schemas[gw.group.model]
        values = np.stack([p.values for p in gw.packets])  # vehicles x columns x rows
        cols = {c.name: c.physical(values[:, i, :]) for i, c in enumerate(schema.columns)}
        for c in schema.columns:
            if c.minimum is not None and c.maximum is not None:
                assert cols[c.name].min() >= c.minimum - 1e-9 and cols[c.name].max() <= c.maximum + 1e-9, c.name
        speed = cols["VehicleSpeed"]
        wheels = np.mean([cols[f"WheelSpeed{w}"] for w in ("FL", "FR", "RL", "RR")], axis=0)
        assert np.abs(wheels - speed).max() < 1.0
        assert np.abs(cols["GnssSpeed"] - speed).max() < 0.02
        moving = speed > 5
        assert (cols["EngineSpeed"][moving] > 500).all() and (cols["GearActual"][moving] >= 1).all()
        # GNSS displacement per second matches the speed
        d = distance_m(cols["Latitude"][:, :-1], cols["Longitude"][:, :-1], cols["Latitude"][:, 1:],
                       cols["Longitude"][:, 1:])
        v_avg = (speed[:, 1:] + speed[:, :-1]) / 2 / 3.6
        assert np.abs(d - v_avg).max() < 0.5


def test_fault_injection_records_every_fault():
    seen = []
    inj = FaultInjector(FaultRates(duplicate=0.2, corrupt=0.2, delay=0.2, reorder=0.2), 1,
                        lambda kind, v, s, d: seen.append((kind, v, s)))
    payloads = [bytes([i]) * 40 for i in range(50)]
    out = inj.apply(0, 0, T0 + 60, list(range(50)), [0] * 50, payloads) + inj.drain()
    kinds = {k for k, _, _ in seen}
    assert kinds == {"duplicate", "corrupt", "delay", "reorder"}
    dup = sum(k == "duplicate" for k, _, _ in seen)
    assert len(out) == 50 + dup
    corrupted = {v for k, v, _ in seen if k == "corrupt"}
    for item in out:
        assert (item.payload != payloads[item.vehicle]) == (item.vehicle in corrupted)


def _lake_rows(lake) -> list[dict]:
    con = duckdb.connect()
    rel = con.sql(f"select * from read_parquet('{lake}/**/*.parquet', hive_partitioning=true, union_by_name=true)")
    return [dict(zip(rel.columns, row)) for row in rel.fetchall()]


async def _sink_run(config: SinkConfig, run: FleetRun) -> Sink:
    sink = Sink(config)
    task = asyncio.create_task(sink.run())
    assert await asyncio.to_thread(sink.intake.connected.wait, 10)
    await asyncio.to_thread(run.run)
    expected = run.manifest["expected"]
    messages = run.counters["messages"]
    await until_async(lambda: sink.stats.packets_staged + sink.stats.duplicates + sink.quarantine.total >= messages,
                      30, interval=0.1)
    sink.stop()
    await task
    assert sink.stats.packets_staged == expected["packets_expected_stored"]
    return sink


@pytest.mark.parametrize("connections", [3, 0])
def test_fleet_through_mosquitto_into_sink(broker, tmp_path, connections):
    faults = FaultRates(duplicate=0.03, corrupt=0.03, delay=0.03, reorder=0.03,
                        disconnect=0.3 if connections else 0.0)
    spec = _spec(faults=faults)
    prefix = f"fleet-{uuid.uuid4().hex[:8]}"
    run = FleetRun(FleetRunConfig(spec, broker=broker, topic_prefix=prefix, connections=connections,
                                  client_prefix=f"fleet-{uuid.uuid4().hex[:6]}"))
    config = SinkConfig(broker=broker, lake_root=tmp_path / "lake", state_path=tmp_path / "state.sqlite",
                        quarantine_dir=tmp_path / "q", vehicle_secret=SECRET, topic_prefix=prefix,
                        client_id=f"sink-{uuid.uuid4().hex[:6]}", roll_interval_s=0.5)
    sink = asyncio.run(_sink_run(config, run))
    manifest = run.manifest
    expected = manifest["expected"]
    assert expected["quarantined"] > 0 and expected["duplicates_injected"] > 0
    assert sink.quarantine.total == expected["quarantined"]
    if connections == 0:  # no connection drops, so no protocol-level re-sends: duplicates are exactly ours
        assert sink.stats.duplicates == expected["duplicates_injected"]
    assert sink.stats.packets_written == expected["packets_expected_stored"]

    rows = _lake_rows(tmp_path / "lake")
    by_vehicle: dict[str, dict[int, dict]] = {}
    seqs: dict[str, set[int]] = {}
    for r in rows:
        by_vehicle.setdefault(r["vehicle"], {})[int(r["ts"].timestamp())] = r
        seqs.setdefault(r["vehicle"], set()).add(int(r["seq"]))
    assert len(rows) == expected["rows_expected"]
    for v in manifest["vehicles"]:
        masked = mask_vehicle(SECRET, v["vehicle_id"])
        corrupted = {f["seq"] for f in v["faults"].get("corrupt", [])}
        assert seqs.get(masked, set()) == set(range(v["seq_first"], v["seq_last"] + 1)) - corrupted
        event = v["event"]
        if event is None or event["seq"] in corrupted:
            continue
        stored = by_vehicle[masked]
        for check in event["checks"]:
            if (check["t"] - manifest["start_time"]) // spec.interval_s in corrupted:
                continue
            value = stored[check["t"]][check["signal"]]
            assert OPS[check["op"]](value, check["value"]), (event["kind"], check, value)
        if event["kind"] == "geofence_exit":
            g, row = event["geofence"], stored[event["t"]]
            assert distance_m(g["lat"], g["lon"], row["Latitude"], row["Longitude"]) > g["radius_m"]
            before = stored[event["t"] - 1]
            assert distance_m(g["lat"], g["lon"], before["Latitude"], before["Longitude"]) <= g["radius_m"]
    # the 2027 model's extra signal is stored for its vehicles only
    models = {r["model"] for r in rows if r.get("CabinCo2") is not None}
    assert models == {"reference-car-2027"}


def test_plan_is_deterministic_and_mixed():
    a, b = plan_fleet(_spec(vehicles=100)), plan_fleet(_spec(vehicles=100))
    assert a == b
    assert {p.profile for p in a} == {"calm", "aggressive", "teen"}
    assert sum(p.scenario is not None for p in a) == len(SCENARIO_KINDS)


def test_corrupted_payload_does_not_decode():
    from minute_packet import PacketDecodeError
    from simulator.faults import corrupt

    gen = FleetGenerator(_spec(vehicles=2, duration_s=60))
    from minute_packet import encode
    payload = encode(next(iter(gen)).packets[0])
    for mode in (0, 1):
        with pytest.raises(PacketDecodeError):
            decode(corrupt(payload, mode)[0])


def test_can_mode_drives_real_gateways(broker):
    """CAN mode: each vehicle's frames on its own virtual bus, read by a real Gateway that publishes."""
    import threading

    from dcm.fleet_can import CanFleetConfig, run_can_fleet

    spec = _spec(vehicles=2, duration_s=120)
    summary = asyncio.run(run_can_fleet(
        CanFleetConfig(spec=spec, broker=broker, topic_prefix=f"can{uuid.uuid4().hex[:6]}", realtime=False),
        threading.Event()))
    assert summary["complete"] and summary["vehicles"] == 2
    assert summary["frames_sent"] > 2 * 120 * 1000
    assert summary["packets_made"] == summary["messages_acked"] == 4  # two minute packets per vehicle
