"""The end-to-end demo: simulator → CAN bus → gateway → Mosquitto → sink → Parquet, then a check.

Each vehicle gets its own python-can ``virtual`` bus; simulated frame time
runs as fast as the machine allows (an accelerated clock) from a minute
boundary. After the run the lake is read back with plain pyarrow and every
stored cell is compared with a direct cantools decode of the frames sent.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import secrets
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import dbc as dbc_files
from dcm_base.errors import ServiceError
from cloud_sink.lake import mask_vehicle
from cloud_sink.service import Sink, SinkConfig
from gateway.service import GatewayConfig
from minute_packet import schema_from_dbc, signals_left_out
from simulator.can_vehicle import CanVehicle
from speed_layer.service import RulesService
from speed_layer.service_config import ServiceConfig
from speed_layer.store import Store
from .car_rig import CarRig

from .broker import BrokerUrl, private_mosquitto
from .demo_fleet import DemoFleet, make_fleet, publish, scenarios_found, write_operational, write_rules
from .groundtruth import FrameRecorder, compare, read_lake_vehicle

log = logging.getLogger(__name__)



def demo_secret(work: Path) -> bytes:
    """The demo's throw-away masking key, ``<work>/sink/mask.key`` (mode 0600), made on first use
    (random: a key that ships in the code would make the lake's vehicle ids reversible)."""
    from .pki import write_private

    path = work / "sink" / "mask.key"
    if not path.exists():
        write_private(path, secrets.token_hex(32).encode())
    return path.read_bytes().strip()


@dataclasses.dataclass(frozen=True)
class DemoSettings:
    vehicles: int = 2
    duration_s: int = 150
    dbc_path: Path = dbc_files.REFERENCE_DBC
    broker: str | None = None
    seed: int = 1
    workdir: Path | None = None
    start_time: int | None = None  # Unix seconds; default: the current minute
    topic_prefix: str | None = None  # default: dcm-demo-<run id>, private to this run
    fleet_vehicles: int = 0  # a packet-mode fleet for the value layer (dcm demo: 12)
    fleet_duration_s: int = 7200  # its fleet time, ending at the current minute


class DemoError(ServiceError):
    """The demo could not finish (the sink could not connect, a gateway failed)."""


def _rules_worker(work: Path, broker: BrokerUrl, prefix: str, run_id: str, fleet: DemoFleet | None) -> RulesService:
    doc = fleet.rules if fleet else {"builtins": True}
    path = write_rules(doc, work / "rules")
    return RulesService(ServiceConfig(
        broker=broker,
        state_path=work / "rules" / "rules-0.sqlite", topic_prefix=prefix, client_id=f"dcm-rules-{run_id}",
        rules_path=path, history=240))


def _rules_done(path: Path) -> int:
    """Packets the rules worker has taken (its counters, read over a connection of this thread)."""
    store = Store(path)
    try:
        c = store.counters()
    finally:
        store.close()
    return sum(c.get(k, 0) for k in ("applied", "duplicates", "replays", "too_late", "waiting_for_schema"))


def _trip_count(lake: Path, ops_source: str, secret: bytes) -> int:
    from batch_layer.config import BatchConfig
    from batch_layer.engine import DuckDBEngine
    from batch_layer.enrich import load_operational
    from batch_layer.lake_source import list_lake
    from batch_layer.lambda_views import full_views

    engine = DuckDBEngine(threads=2)
    try:
        return full_views(engine, list_lake(str(lake)), BatchConfig(),
                          load_operational(ops_source, secret))["trips"].num_rows
    finally:
        engine.close()


def run_demo(settings: DemoSettings, progress=None) -> dict[str, Any]:
    """Run the whole chain and return the summary dict (see README)."""
    db = dbc_files.load(settings.dbc_path)
    with tempfile.TemporaryDirectory(prefix="dcm-demo-") as tmp:
        work = Path(settings.workdir or tmp)
        if settings.broker:
            return asyncio.run(_run(settings, db, BrokerUrl.parse(settings.broker), work, progress))
        with private_mosquitto() as broker:
            return asyncio.run(_run(settings, db, broker, work, progress))


async def _run(settings: DemoSettings, db: Any, broker: BrokerUrl, work: Path, progress) -> dict[str, Any]:
    say = progress or (lambda msg: log.info("%s", msg))
    t_begin = time.monotonic()
    run_id = uuid.uuid4().hex[:8]
    prefix = settings.topic_prefix or f"dcm-demo-{run_id}"
    start = settings.start_time or int(time.time()) // 60 * 60
    secret = demo_secret(work)
    sink = Sink(SinkConfig(
        broker=broker, lake_root=work / "lake", state_path=work / "sink" / "state.sqlite",
        quarantine_dir=work / "sink" / "quarantine", vehicle_secret=secret, topic_prefix=prefix,
        client_id=f"dcm-sink-{run_id}", dbc_paths=(settings.dbc_path,), roll_interval_s=3600,
    ))
    sink_task = asyncio.create_task(sink.run(), name="sink")
    fleet = make_fleet(settings.fleet_vehicles, settings.fleet_duration_s, prefix, settings.seed) \
        if settings.fleet_vehicles else None
    rules = _rules_worker(work, broker, prefix, run_id, fleet)
    rules_thread = threading.Thread(target=rules.run, name="rules", daemon=True)
    rules_thread.start()

    async def stop_services() -> None:
        sink.stop()
        rules.stop()
        await sink_task
        await asyncio.to_thread(rules_thread.join, 30)

    if not (await asyncio.to_thread(sink.intake.connected.wait, 15)
            and await asyncio.to_thread(rules.connected.wait, 15)):
        await stop_services()
        raise DemoError(f"sink or rules worker could not connect to {broker}")
    say(f"broker {broker}; {settings.vehicles} vehicles × {settings.duration_s} s from {Path(settings.dbc_path).name}")

    vehicles = [f"DEMO{settings.seed:04d}V{i:05d}" for i in range(settings.vehicles)]
    rigs, recorders = [], []
    for i, vid in enumerate(vehicles):
        rec = FrameRecorder(db)
        vehicle = CanVehicle(db, seed=settings.seed * 1000 + i, start_time=float(start))
        recorders.append(rec)
        rigs.append(CarRig(
            GatewayConfig(vehicle_id=vid, broker=broker, outbox_path=work / "gateway" / f"{vid}.sqlite",
                          dbc_path=settings.dbc_path, interface="virtual", channel=f"{prefix}-{i}",
                          # frame time runs faster than the wall clock here, so a starved reader must
                          # not close a minute early (its later frames would count as late): the
                          # rig's close flushes the last minute anyway
                          topic_prefix=prefix, idle_flush_s=120.0),
            vehicle.frames(settings.duration_s), on_frame=rec.add))
    gateways = [r.gateway for r in rigs]
    for rig in rigs:
        rig.start()
    while any(r.sending for r in rigs):
        await asyncio.sleep(0.5)
        sent = sum(r.frames for r in recorders)
        say(f"simulating: {sent:,} frames sent, {sum(g.source.stats.frames for g in gateways):,} read")
    closed = await asyncio.gather(*(r.close() for r in rigs))
    errors = [(r, e) for r, e in zip(rigs, closed) if e is not None]
    if errors:
        await stop_services()
        rig, exc = errors[0]
        part = "the simulator" if exc is rig.sender_error else "a gateway"
        raise DemoError(f"{part} failed for {rig.gateway.config.vehicle_id}: {type(exc).__name__}: {exc}")
    published = sum(g.publisher.stats.published for g in gateways)
    say(f"gateways done: {published} packets published")
    if fleet is not None:
        say(f"fleet: publishing {fleet.packets} packets of {settings.fleet_vehicles} vehicles"
            f" × {settings.fleet_duration_s} s with {len(fleet.events)} injected scenarios")
        await asyncio.to_thread(publish, broker, fleet.items, f"dcm-demo-fleet-{run_id}")
    want = published + (fleet.packets if fleet else 0)
    say("waiting for the sink and the rules worker")
    deadline = time.monotonic() + 60 + want / 20
    while time.monotonic() < deadline and (sink.stats.packets_staged + sink.stats.duplicates < want
                                           or _rules_done(work / "rules" / "rules-0.sqlite") < want):
        await asyncio.sleep(0.2)
    await stop_services()

    schema = schema_from_dbc(db)
    mismatches, rows_written = 0, 0
    expected_rows = 0
    for vid, rec in zip(vehicles, recorders):
        expected = rec.expected(schema)
        expected_rows += len(expected)
        stored = read_lake_vehicle(work / "lake", mask_vehicle(secret, vid))
        rows_written += len(stored)
        mismatches += compare(expected, stored, (c.name for c in schema.columns if c.aggregate == "last"))
    packet_bytes = sum(g.stats.packet_bytes for g in gateways)
    alerts = Store(work / "rules" / "rules-0.sqlite")
    try:
        raised = alerts.alerts()
        by_kind = collections.Counter(a["kind"] for a in raised)
    finally:
        alerts.close()
    say("computing trips and scores from the lake")
    ops = write_operational(work / "ops", fleet, vehicles, min(start, fleet.spec.start_time if fleet else start) - 86400)
    trips = await asyncio.to_thread(_trip_count, work / "lake", ops, secret)
    return {
        "vehicles": settings.vehicles,
        "duration_s": settings.duration_s,
        "dbc": Path(settings.dbc_path).name,
        "signals": len(schema.columns),
        "signals_left_out": signals_left_out(db),  # DBC signals with no column (longer than 64 bits ...)
        "frames_sent": sum(r.frames for r in recorders),
        "frames_read": sum(g.source.stats.frames for g in gateways),
        "frames_malformed": sum(g.sampler.stats.frames_malformed for g in gateways),
        "frames_late": sum(g.sampler.stats.frames_late for g in gateways),
        "packets_published": published + (fleet.packets if fleet else 0),  # gateways + fleet
        "gateway_packets": published,
        "packets_written": sink.stats.packets_written,
        "duplicates": sink.stats.duplicates,
        "quarantined": sink.quarantine.total,
        "rows_written": rows_written,
        "vehicle_seconds": expected_rows,
        "mismatches": mismatches,
        "bytes_per_vehicle_minute": round(packet_bytes / (expected_rows / 60), 1) if expected_rows else None,
        "lake_files": sink.stats.files_written,
        "fleet_vehicles": settings.fleet_vehicles if fleet else 0,
        "fleet_packets": fleet.packets if fleet else 0,
        "scenarios_found": scenarios_found(fleet, raised) if fleet else {},
        "alerts": dict(sorted(by_kind.items())),
        "trips": trips,
        "elapsed_s": round(time.monotonic() - t_begin, 1),
        "broker": str(broker),
    }
