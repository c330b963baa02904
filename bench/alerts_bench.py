"""``dcm bench alerts``: recall and precision of the built-in rules against the fleet simulator's ground truth.

A packet-mode fleet with injected scenarios (headlights left on, battery decline, harsh braking,
rapid acceleration, sharp turn, speeding, geofence exit, DTC, crash) is generated in this
process, published QoS 1 to a private Mosquitto (with its retained schemas, optionally with
duplicates and out-of-order packets), and consumed by ``--workers`` rule workers
(:class:`speed_layer.service.RulesService`, one thread each, own sessions and databases). The
manifest's events are the ground truth:

* recall per rule: the injected scenarios (that showed in the data) with an alert of that rule on
  the scenario's vehicle inside the scenario's window;
* precision per rule: alerts explained by a scenario / (explained + alerts on *calm* drivers that
  no scenario explains). Aggressive and teen drivers really do brake and corner harshly without a
  scenario, so their unexplained alerts are listed as ``unlabelled``, not counted as false.

The fleet is published at once (a backlog drain), so that part reports throughput
(``packets_per_s``), not latency. Latency is measured on edge triggers: a real
:class:`gateway.service.Gateway` reads a python-can virtual bus on which a crash frame
(``AIRBAG_STATUS.CrashDetected`` = 1, stamped with the wall clock when written) appears every
``--edge-period`` seconds; its trigger makes an event packet, which goes through the gateway's
outbox, Mosquitto and a rules worker into a stored alert, published on the alerts topic.
``edge_event_p50_ms``/``edge_event_p99_ms``: from the frame's timestamp to the alert's arrival at
an MQTT subscriber (it is published only after it is stored), over ``--edge-events`` events.
"""
from __future__ import annotations

import argparse
import json
import random
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

import dbc
from dcm.broker import private_mosquitto
from dcm.demo_fleet import fleet_rules
from minute_packet import Topics, encode
from simulator.fleet_generator import FleetGenerator
from simulator.fleet_spec import SCENARIO_WINDOWS, FleetSpec
from speed_layer.config import rules_from_mapping
from speed_layer.service import RulesService
from speed_layer.service_config import Broker, ServiceConfig
from speed_layer.store import Store

# alert kind -> the scenario kinds that explain it
EXPLAINS = {
    "headlights_left_on": ("headlights_left_on",),
    # the lamps' 10 A load lowers the resting voltage of a car whose headlights were left on: a real decline
    "battery_decline": ("battery_decline", "headlights_left_on"),
    "battery_low": ("battery_decline", "headlights_left_on"),
    "battery_critical": ("battery_decline", "headlights_left_on"),
    "harsh_braking": ("harsh_braking",), "harsh_acceleration": ("rapid_acceleration",),
    "harsh_cornering": ("sharp_turn",), "speeding": ("speeding",), "geofence_exit": ("geofence_exit",),
    "dtc_new": ("dtc",), "crash": ("crash",),
}
RECALL_OF = {scenarios[0]: kind for kind, scenarios in EXPLAINS.items()
             if kind not in ("battery_low", "battery_critical")}
SLACK_S = 30


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vehicles", type=int, default=60)
    p.add_argument("--duration", type=int, default=3600, help="seconds of fleet time")
    p.add_argument("--scenarios-per-kind", type=int, default=2)
    p.add_argument("--seed", type=int, default=12)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--battery-decline", type=float, default=24.0, help="V/day of the battery scenario")
    p.add_argument("--faults", action="store_true", help="publish 5 %% duplicates and swap neighbouring packets")
    p.add_argument("--edge-events", type=int, default=120, help="crash frames for the edge latency (0: skip)")
    p.add_argument("--edge-period", type=float, default=0.1, help="seconds between crash frames")


def _publish(broker: Broker, items: list[tuple[str, bytes, bool]], sent_at: dict[int, float]) -> None:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.connect(broker.host, broker.port)
    c.loop_start()
    infos = []
    for i, (topic, payload, retain) in enumerate(items):
        sent_at[i] = time.time()
        infos.append(c.publish(topic, payload, qos=1, retain=retain))
    for info in infos:
        info.wait_for_publish(60)
    c.disconnect()
    c.loop_stop()


class _AlertWatch:
    def __init__(self, broker: Broker, topic: str) -> None:
        self.first: dict[str, float] = {}
        self.lock = threading.Lock()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        c.on_message = self._on_message
        c.connect(broker.host, broker.port)
        c.subscribe(topic, qos=1)
        c.loop_start()
        self.client = c

    def _on_message(self, client, userdata, msg) -> None:
        body = json.loads(msg.payload)
        with self.lock:
            self.first.setdefault(body["id"], time.time())

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _window(event: dict[str, Any], end: int) -> tuple[int, int]:
    lead, tail = SCENARIO_WINDOWS[event["kind"]]
    hi = end if event["kind"] in ("battery_decline", "crash", "headlights_left_on") else event["planned_t"] + tail
    return event["planned_t"] - lead - SLACK_S, hi + SLACK_S


def score(alerts: list[dict[str, Any]], events: dict[int, dict[str, Any]], plans: list, end: int) -> dict[str, Any]:
    """Recall, precision and the unexplained alerts, per alert kind."""
    by_vid = {p.vehicle_id: p for p in plans}
    found: dict[int, bool] = {}
    tp: dict[str, int] = {}
    fp: dict[str, list] = {}
    unlabelled: dict[str, int] = {}
    for a in alerts:
        plan = by_vid[a["vehicle"]]
        event = events.get(plan.index)
        explained = False
        if event is not None and event["kind"] in EXPLAINS.get(a["kind"], ()):
            lo, hi = _window(event, end)
            explained = lo <= a["start"] <= hi
        if explained:
            tp[a["kind"]] = tp.get(a["kind"], 0) + 1
            if RECALL_OF.get(event["kind"]) == a["kind"]:  # found the scenario it was injected for
                found[plan.index] = True
        elif plan.profile == "calm":
            fp.setdefault(a["kind"], []).append({"vehicle": a["vehicle"], "start": a["start"], "details": a["details"]})
        else:
            unlabelled[a["kind"]] = unlabelled.get(a["kind"], 0) + 1
    recall: dict[str, float | None] = {}
    injected: dict[str, int] = {}
    # a battery decline shows only once the voltage has dropped: the manifest then checks it
    # (a drop of at least 0.05 V before the end); before that it is not observable
    unobservable = {i for i, e in events.items() if e["kind"] == "battery_decline"
                    and not any(c["signal"] == "BatteryVoltage" for c in e["checks"])}
    for kind in RECALL_OF.values():
        scen = [i for i, e in events.items() if RECALL_OF[e["kind"]] == kind and i not in unobservable]
        injected[kind] = len(scen)
        recall[kind] = round(sum(1 for i in scen if found.get(i)) / len(scen), 3) if scen else None
    precision: dict[str, float | None] = {}
    for kind in sorted(set(EXPLAINS) | set(tp) | set(fp)):
        t, f = tp.get(kind, 0), len(fp.get(kind, []))
        precision[kind] = round(t / (t + f), 3) if t + f else None
    missed = [{"kind": e["kind"], "vehicle": plans[i].vehicle_id, "t_before_end_s": end - e["t"]}
              for i, e in sorted(events.items()) if not found.get(i) and i not in unobservable]
    not_observable = [{"kind": events[i]["kind"], "vehicle": plans[i].vehicle_id,
                       "t_before_end_s": end - events[i]["t"]} for i in sorted(unobservable)]
    return {"recall": recall, "precision": precision, "injected": injected, "missed": missed,
            "not_observable": not_observable, "true_alerts": tp,
            "false_alerts": {k: len(v) for k, v in fp.items()}, "false_alert_examples": {k: v[:3] for k, v in fp.items()},
            "unlabelled_alerts": unlabelled}


def run(args: argparse.Namespace) -> dict[str, Any]:
    start = int(time.time()) // 86400 * 86400 - 86400
    spec = FleetSpec(vehicles=args.vehicles, duration_s=args.duration, start_time=start, seed=args.seed,
                     scenarios_per_kind=args.scenarios_per_kind, battery_decline_v_per_day=args.battery_decline)
    t_gen = time.perf_counter()
    gen = FleetGenerator(spec)
    packets = [p for window in gen for p in window.packets]
    events = gen.events()
    gen_s = time.perf_counter() - t_gen
    rules_doc = fleet_rules(spec, events, gen.plans)
    rules = rules_from_mapping(rules_doc, "<bench>")
    topics = Topics("bench")
    items: list[tuple[str, bytes, bool]] = [(topics.schema(s.fingerprint), s.to_json(), True)
                                            for s in gen.schemas.values()]
    order = list(range(len(packets)))
    rng = random.Random(args.seed)
    if args.faults:  # swap 5 % of the packets with the same vehicle's next one, then 5 % duplicates
        v = args.vehicles
        for i in range(len(order) - v):
            if rng.random() < 0.05:
                order[i], order[i + v] = order[i + v], order[i]
        order += rng.sample(order, len(order) // 20)
    items += [(topics.telemetry(packets[i].vehicle_id), encode(packets[i]), False) for i in order]
    with tempfile.TemporaryDirectory(prefix="dcm-bench-alerts-") as tmp, private_mosquitto() as url:
        broker = Broker(url.host, url.port)
        services = [RulesService(ServiceConfig(broker=broker, state_path=Path(tmp) / f"w{k}.sqlite",
                                               topic_prefix="bench", worker=k, workers=args.workers,
                                               client_id=f"bench-rules-{k}", history=240, batch=100), rules)
                    for k in range(args.workers)]
        threads = [threading.Thread(target=s.run, daemon=True) for s in services]
        for t in threads:
            t.start()
        for s in services:
            if not s.connected.wait(20):
                raise RuntimeError("a rules worker could not subscribe")
        watch = _AlertWatch(broker, topics.all_vehicles("alerts"))  # alerts really go out on MQTT
        sent_at: dict[int, float] = {}
        t0 = time.perf_counter()
        _publish(broker, items, sent_at)
        stores = [Store(Path(tmp) / f"w{k}.sqlite") for k in range(args.workers)]
        want = len(items) - len(gen.schemas)
        keys = ("applied", "duplicates", "replays", "too_late", "waiting_for_schema")

        def done() -> int:
            return sum(c.get(k, 0) for st in stores for c in [st.counters()] for k in keys)
        deadline = time.monotonic() + 600
        while done() < want and time.monotonic() < deadline:
            time.sleep(0.2)
        while any(st.outbox_depth("mqtt") for st in stores) and time.monotonic() < deadline:
            time.sleep(0.1)
        elapsed = time.perf_counter() - t0
        time.sleep(0.5)
        watch.close()
        alerts = [a for st in stores for a in st.alerts()]
        counters: dict[str, int] = {}
        for st in stores:
            for k, v in st.counters().items():
                counters[k] = counters.get(k, 0) + v
        for s in services:
            s.stop()
        for t in threads:
            t.join(30)
    result = score(alerts, events, gen.plans, spec.end_time)
    edge = _edge_latency(args) if args.edge_events else {}
    return {
        **result,
        **edge,
        "vehicles": args.vehicles, "fleet_seconds": spec.end_time - spec.start_time, "packets": len(packets),
        "deliveries": want, "workers": args.workers, "alerts": len(alerts),
        "packets_per_s": round(want / elapsed, 1), "generate_s": round(gen_s, 2), "process_s": round(elapsed, 2),
        "alerts_received_on_mqtt": len(watch.first), "counters": counters, "dbc": [Path(m.dbc_path).name for m in spec.models], "faults": args.faults,
        "reference": str(dbc.REFERENCE_DBC.name),
    }


def _edge_latency(args: argparse.Namespace) -> dict[str, Any]:
    """Crash frames on a virtual bus → gateway trigger → outbox → Mosquitto → rules worker → alert."""
    import asyncio
    import uuid

    import can

    from gateway.config import GatewayConfig
    from gateway.service import Gateway
    from gateway.triggers import triggers_from_config

    db = dbc.load(dbc.REFERENCE_DBC)
    airbag = db.get_message_by_name("AIRBAG_STATUS")

    def frame(crashed: int) -> can.Message:
        data = airbag.encode({s.name: 0 for s in airbag.signals} | {"CrashDetected": crashed}, strict=False)
        return can.Message(arbitration_id=airbag.frame_id, data=data, timestamp=time.time(), is_extended_id=False)

    channel = f"bench-edge-{uuid.uuid4().hex[:8]}"
    topics = Topics("edge")
    arrivals: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="dcm-bench-edge-") as tmp, private_mosquitto() as url:
        broker = Broker(url.host, url.port)
        rules = RulesService(ServiceConfig(broker=broker, state_path=Path(tmp) / "rules.sqlite", topic_prefix="edge",
                                           client_id="bench-edge-rules", dbc_paths=(dbc.REFERENCE_DBC,)))
        rthread = threading.Thread(target=rules.run, daemon=True)
        rthread.start()
        rules.connected.wait(20)
        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)

        def on_message(client, userdata, msg) -> None:
            body = json.loads(msg.payload)
            if body.get("rule") == "edge":
                arrivals.setdefault(body["details"]["time_ms"], time.time())
        sub.on_message = on_message
        sub.connect(broker.host, broker.port)
        sub.subscribe(topics.all_vehicles("alerts"), qos=1)
        sub.loop_start()
        specs = triggers_from_config([{"name": "crash", "condition": "rising(CrashDetected == 1)"}])
        config = GatewayConfig(vehicle_id="EDGE1", broker=broker_url(broker), outbox_path=Path(tmp) / "outbox.sqlite",
                               interface="virtual", channel=channel, topic_prefix="edge", triggers=specs)
        sent: list[int] = []

        async def main() -> None:
            bus = can.Bus(interface="virtual", channel=channel, preserve_timestamps=True)
            gw = Gateway(config, bus=bus)
            task = asyncio.create_task(gw.run())
            await asyncio.sleep(1.0)  # connected
            with can.Bus(interface="virtual", channel=channel, preserve_timestamps=True) as sim:
                for _ in range(args.edge_events):
                    f = frame(1)
                    sim.send(f)
                    sent.append(int(round(f.timestamp * 1000)))
                    await asyncio.sleep(args.edge_period / 2)
                    sim.send(frame(0))
                    await asyncio.sleep(args.edge_period / 2)
            deadline = time.monotonic() + 30
            while len(arrivals) < len(sent) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            gw.stop()
            await task
            bus.shutdown()
        asyncio.run(main())
        sub.loop_stop()
        sub.disconnect()
        rules.stop()
        rthread.join(30)
    lat = sorted((arrivals[t] - t / 1000) * 1000 for t in sent if t in arrivals)
    return {"edge_events_sent": len(sent), "edge_events_alerted": len(lat),
            "edge_event_p50_ms": round(float(_pct(lat, 50)), 1) if lat else None,
            "edge_event_p99_ms": round(float(_pct(lat, 99)), 1) if lat else None,
            "edge_event_max_ms": round(lat[-1], 1) if lat else None}


def _pct(values: list[float], q: float) -> float:
    import numpy as np
    return float(np.percentile(values, q))


def broker_url(b: Broker):
    from dcm_base.broker_url import BrokerUrl
    return BrokerUrl(b.host, b.port)
