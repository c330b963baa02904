"""The demo's value layer: a packet-mode fleet with injected scenarios, and the rules it is watched by.

Besides its CAN-level cars (checked cell for cell), ``dcm demo`` publishes a small fleet from
:class:`simulator.fleet_generator.FleetGenerator` (calm, aggressive and teen drivers; one
scenario per vehicle where the fleet is large enough: headlights left on, battery decline, harsh
braking, speeding, geofence exit, DTC, crash ...) that ends at the current minute, so that the
rules worker has alerts to raise and the batch views have trips and scores to show.
:func:`fleet_rules` is the rules document that matches such a fleet (one geofence per
geofence-exit vehicle, the fleet's speed limit, a battery trend on minute buckets because the
fleet's time is short); ``dcm bench alerts`` uses it too.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from dcm_base.broker_url import BrokerUrl
from minute_packet import Topics, encode
from simulator.fleet_generator import FleetGenerator
from simulator.fleet_spec import SPEED_LIMIT_KMH, FleetSpec

PUBLISH_TIMEOUT_S = 120
# the alert kind that finds each injected scenario kind
ALERT_OF = {"headlights_left_on": "headlights_left_on", "battery_decline": "battery_decline",
            "harsh_braking": "harsh_braking", "rapid_acceleration": "harsh_acceleration",
            "sharp_turn": "harsh_cornering", "speeding": "speeding", "geofence_exit": "geofence_exit",
            "dtc": "dtc_new", "crash": "crash"}


def scenarios_found(fleet: DemoFleet, alerts: list[dict[str, Any]]) -> dict[str, bool]:
    """Per injected scenario ("kind@vehicle"): whether an alert of its kind was raised on its vehicle."""
    raised = {(a["kind"], a["vehicle"]) for a in alerts}
    return {f"{e['kind']}@{fleet.vehicle_ids[i]}": (ALERT_OF.get(e["kind"]), fleet.vehicle_ids[i]) in raised
            for i, e in sorted(fleet.events.items())}


def fleet_rules(spec: FleetSpec, events: dict[int, dict[str, Any]], plans: list) -> dict[str, Any]:
    """The rules document (the rules TOML as a mapping) for a generated fleet."""
    fences: dict[str, Any] = {}
    rules: dict[str, Any] = {
        "speeding": {"limit_kmh": SPEED_LIMIT_KMH},
        # fleet time is short: buckets of a minute stand in for days (the scenario's decline is fast)
        "battery_decline": {"bucket_s": 60, "rest_s": 60, "min_buckets": 3, "window": 5, "min_samples": 30,
                            "slope_v": round(spec.battery_decline_v_per_day * 60 / 86400 / 2, 5)},
        "geofence": {"enabled": False},  # the fences below are each for one vehicle
    }
    for index, event in events.items():
        if event["kind"] == "geofence_exit":
            vid = plans[index].vehicle_id
            g = event["geofence"]
            fences[f"f{index}"] = {"circle": {"lat": g["lat"], "lon": g["lon"], "radius_m": g["radius_m"]}}
            rules[f"fence_{index}"] = {"type": "geofence", "fences": [f"f{index}"], "vehicles": [vid],
                                       "events": ["exit"]}
    return {"builtins": True, "geofences": fences, "rules": rules}


@dataclasses.dataclass(frozen=True)
class DemoFleet:
    """A generated fleet: its packets (with topics) and its ground truth."""

    spec: FleetSpec
    items: list[tuple[str, bytes, bool]]  # (topic, payload, retain): schemas first, then packets
    packets: int
    events: dict[int, dict[str, Any]]
    rules: dict[str, Any]
    vehicle_ids: tuple[str, ...]
    models: tuple[str, ...]
    profiles: tuple[str, ...]  # the driver profile of each vehicle's (one) driver


def make_fleet(vehicles: int, duration_s: int, prefix: str, seed: int, end: int | None = None) -> DemoFleet:
    """``vehicles`` × ``duration_s`` of fleet time ending at the minute ``end`` (default: now)."""
    end = (end or int(time.time())) // 60 * 60
    spec = FleetSpec(vehicles=vehicles, duration_s=duration_s, start_time=end - duration_s, seed=seed,
                     scenarios_per_kind=1, battery_decline_v_per_day=24.0)
    gen = FleetGenerator(spec)
    packets = [p for window in gen for p in window.packets]
    events = gen.events()
    topics = Topics(prefix)
    items = [(topics.schema(s.fingerprint), s.to_json(), True) for s in gen.schemas.values()]
    items += [(topics.telemetry(p.vehicle_id), encode(p), False) for p in packets]
    return DemoFleet(spec, items, len(packets), events, fleet_rules(spec, events, gen.plans),
                     tuple(p.vehicle_id for p in gen.plans), tuple(p.model for p in gen.plans),
                     tuple(p.profile for p in gen.plans))


NAMES = ("Ada", "Bruno", "Chiara", "Dev", "Elif", "Farid", "Grete", "Hana", "Ivo", "Jun", "Kemal", "Lena",
         "Mateo", "Noor", "Otto", "Priya", "Quinn", "Rosa", "Sven", "Tomi")


def write_operational(folder: Path, fleet: DemoFleet | None, can_vehicles: list[str], since: int) -> str:
    """The operational tables (vehicles, devices, drivers, assignments) as CSV; returns ``csv:<folder>``.

    Every vehicle has one driver from ``since`` on, named after the fleet's driver profile so the
    leaderboard can be read against the simulator's truth; two fleets (north, south) split the vehicles."""
    import csv
    import datetime as dt

    folder.mkdir(parents=True, exist_ok=True)
    rows = [(vid, "reference-car", "calm") for vid in can_vehicles]
    if fleet is not None:
        rows += list(zip(fleet.vehicle_ids, fleet.models, fleet.profiles))
    valid_from = dt.datetime.fromtimestamp(since, dt.timezone.utc).isoformat()
    tables: dict[str, list[tuple]] = {
        "vehicles": [("vin", "plate", "model", "fleet")],
        "devices": [("device_id", "vin", "installed_from")],
        "drivers": [("driver_id", "name")],
        "assignments": [("driver_id", "vin", "valid_from")],
    }
    for i, (vid, model, profile) in enumerate(rows):
        driver = f"D{i + 1:03d}"
        tables["vehicles"].append((vid, f"DCM-{i + 1:03d}", model, ("north", "south")[i % 2]))
        tables["devices"].append((f"dcm-{i + 1:03d}", vid, valid_from))
        tables["drivers"].append((driver, f"{NAMES[i % len(NAMES)]} ({profile})"))
        tables["assignments"].append((driver, vid, valid_from))
    for name, table in tables.items():
        with open(folder / f"{name}.csv", "w", newline="") as f:
            csv.writer(f).writerows(table)
    return f"csv:{folder}"


def publish(broker: BrokerUrl, items: list[tuple[str, bytes, bool]], client_id: str) -> None:
    """Publish every item at QoS 1 and wait for the broker's acknowledgements."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    if broker.username:
        c.username_pw_set(broker.username, broker.password)
    if broker.tls:
        import ssl
        c.tls_set_context(ssl.create_default_context())
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.connect(broker.host, broker.port)
    c.loop_start()
    try:
        infos = [c.publish(topic, payload, qos=1, retain=retain) for topic, payload, retain in items]
        deadline = time.monotonic() + PUBLISH_TIMEOUT_S
        for info in infos:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
        unacked = sum(1 for i in infos if not i.is_published())
        if unacked:
            raise TimeoutError(f"{unacked} of {len(infos)} fleet messages not acknowledged by {broker}")
    finally:
        c.disconnect()
        c.loop_stop()


def write_rules(doc: dict[str, Any], folder: Path) -> Path:
    """The rules document as ``folder/rules.toml`` (with an empty geofence store beside it, for the API)."""
    import tomli_w

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "rules.toml"
    path.write_text("# written by dcm demo: the rules that watch the demo fleet\n"
                    + tomli_w.dumps({**doc, "geofences_file": "geofences.json"}))
    return path
