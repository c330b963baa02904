"""The end-to-end demo: simulator → CAN bus → gateway → Mosquitto → sink → Parquet, then a check.

Each vehicle gets its own python-can ``virtual`` bus; simulated frame time
runs as fast as the machine allows (an accelerated clock) from a minute
boundary. After the run the lake is read back with plain pyarrow and every
stored cell is compared with a direct cantools decode of the frames sent.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import dbc as dbc_files
from dcm_base.errors import ServiceError
from cloud_sink.lake import mask_vehicle
from cloud_sink.service import Sink, SinkConfig
from gateway.service import GatewayConfig
from minute_packet import schema_from_dbc
from simulator.can_vehicle import CanVehicle
from .car_rig import CarRig

from .broker import BrokerUrl, private_mosquitto
from .groundtruth import FrameRecorder, compare, read_lake_vehicle

log = logging.getLogger(__name__)

DEMO_SECRET = b"dcm-demo-secret"


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


class DemoError(ServiceError):
    """The demo could not finish (the sink could not connect, a gateway failed)."""


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
    sink = Sink(SinkConfig(
        broker=broker, lake_root=work / "lake", state_path=work / "sink" / "state.sqlite",
        quarantine_dir=work / "sink" / "quarantine", vehicle_secret=DEMO_SECRET, topic_prefix=prefix,
        client_id=f"dcm-sink-{run_id}", dbc_paths=(settings.dbc_path,), roll_interval_s=3600,
    ))
    sink_task = asyncio.create_task(sink.run(), name="sink")
    if not await asyncio.to_thread(sink.intake.connected.wait, 15):
        sink.stop()
        await sink_task
        raise DemoError(f"sink could not connect to {broker}")
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
    errors = [e for e in await asyncio.gather(*(r.close() for r in rigs)) if e is not None]
    if errors:
        sink.stop()
        await sink_task
        raise DemoError(f"a gateway failed: {errors[0]}")
    published = sum(g.publisher.stats.published for g in gateways)
    say(f"gateways done: {published} packets published; waiting for the sink")
    deadline = time.monotonic() + 60
    while sink.stats.packets_staged + sink.stats.duplicates < published and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    sink.stop()
    await sink_task

    schema = schema_from_dbc(db)
    mismatches, rows_written = 0, 0
    expected_rows = 0
    for vid, rec in zip(vehicles, recorders):
        expected = rec.expected(schema)
        expected_rows += len(expected)
        stored = read_lake_vehicle(work / "lake", mask_vehicle(DEMO_SECRET, vid))
        rows_written += len(stored)
        mismatches += compare(expected, stored, (c.name for c in schema.columns if c.aggregate == "last"))
    packet_bytes = sum(g.stats.packet_bytes for g in gateways)
    return {
        "vehicles": settings.vehicles,
        "duration_s": settings.duration_s,
        "dbc": Path(settings.dbc_path).name,
        "signals": len(schema.columns),
        "frames_sent": sum(r.frames for r in recorders),
        "frames_read": sum(g.source.stats.frames for g in gateways),
        "frames_malformed": sum(g.sampler.stats.frames_malformed for g in gateways),
        "frames_late": sum(g.sampler.stats.frames_late for g in gateways),
        "packets_published": published,
        "packets_written": sink.stats.packets_written,
        "duplicates": sink.stats.duplicates,
        "quarantined": sink.quarantine.total,
        "rows_written": rows_written,
        "vehicle_seconds": expected_rows,
        "mismatches": mismatches,
        "bytes_per_vehicle_minute": round(packet_bytes / (expected_rows / 60), 1) if expected_rows else None,
        "lake_files": sink.stats.files_written,
        "elapsed_s": round(time.monotonic() - t_begin, 1),
        "broker": str(broker),
    }
