"""CAN mode of ``dcm simulate fleet``: every vehicle writes real frames onto its own bus, read by a real gateway.

Each vehicle of :func:`simulator.fleet_can.fleet_cars` sends on its own
python-can ``virtual`` channel (or ``vcan<k>`` with ``interface="socketcan"``)
through a :class:`~dcm.car_rig.CarRig`, whose
:class:`gateway.service.Gateway` samples that bus and publishes to the broker,
exactly as on a car. The summary reports what the gateways made and published.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import can

from dcm_base.broker_url import BrokerUrl
from gateway.config import GatewayConfig
from simulator.fleet_can import fleet_cars
from simulator.fleet_spec import FleetSpec

from .car_rig import CarRig

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class CanFleetConfig:
    spec: FleetSpec
    broker: BrokerUrl
    topic_prefix: str = "dcm"
    interface: str = "virtual"  # or "socketcan" with channels vcan0..k
    channel_prefix: str | None = None  # default: a unique virtual channel name per run
    realtime: bool = True  # pace frames by their timestamps; False: as fast as the buses take them
    workdir: Path | None = None


async def run_can_fleet(config: CanFleetConfig, stop: threading.Event,
                        progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run the CAN-mode fleet until its duration has been sent (or ``stop``); returns the summary."""
    spec = config.spec
    cars = fleet_cars(spec)
    plans = [car.plan for car in cars]
    tmp = tempfile.TemporaryDirectory(prefix="dcm-fleet-can-")
    work = Path(config.workdir or tmp.name)
    prefix = config.channel_prefix or (f"fleet-{uuid.uuid4().hex[:8]}-" if config.interface == "virtual" else "vcan")
    rigs, sent = [], [0] * len(cars)
    t0 = time.monotonic()
    for i, car in enumerate(cars):
        plan = car.plan

        def count(_frame: can.Message, i: int = i) -> None:
            sent[i] += 1

        rigs.append(CarRig(
            GatewayConfig(vehicle_id=plan.vehicle_id, broker=config.broker, model=plan.model,
                          outbox_path=work / f"{plan.vehicle_id}.sqlite", dbc_path=car.dbc_path,
                          interface=config.interface, channel=f"{prefix}{i}", topic_prefix=config.topic_prefix,
                          idle_flush_s=1.0),
            car.vehicle.frames(spec.end_time - spec.start_time), realtime=config.realtime, stop=stop, on_frame=count))
    gateways = [r.gateway for r in rigs]
    for rig in rigs:
        rig.start()
    try:
        while any(r.sending for r in rigs):
            await asyncio.sleep(1.0)
            if progress is not None:
                progress(_summary(plans, gateways, sent, t0, spec, config.realtime))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not stop.is_set() and sum(
                g.source.stats.frames for g in gateways) < sum(sent):  # gateways still reading their backlog
            await asyncio.sleep(0.2)
        await asyncio.sleep(2.5)  # the gateways close their last packet after 1 s without frames
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not stop.is_set() and any(
                g.publisher.stats.published < g.stats.packets_made for g in gateways):
            await asyncio.sleep(0.2)
    finally:
        for error in await asyncio.gather(*(r.close() for r in rigs)):
            if error is not None:
                log.error("a gateway failed: %s", error)
        tmp.cleanup()
    summary = _summary(plans, gateways, sent, t0, spec, config.realtime)
    summary.update({"mode": "can", "complete": not stop.is_set(), "broker": str(config.broker),
                    "interface": config.interface, "start_time": spec.start_time})
    return summary


def _summary(plans: list, gateways: list, sent: list[int], t0: float, spec: FleetSpec,
             realtime: bool) -> dict[str, Any]:
    elapsed = time.monotonic() - t0
    published = sum(g.publisher.stats.published for g in gateways)
    nbytes = sum(g.publisher.stats.published_bytes for g in gateways)
    duration = spec.end_time - spec.start_time
    return {
        "vehicles": len(plans), "elapsed_s": round(elapsed, 1),
        "remaining_s": round(max(0.0, duration - elapsed), 1) if realtime else None,
        "frames_sent": sum(sent), "packets_made": sum(g.stats.packets_made for g in gateways),
        "messages_acked": published, "bytes_acked": nbytes,
        "packets_per_s": round(published / elapsed, 1) if elapsed else 0.0,
        "bytes_per_s": round(nbytes / elapsed, 1) if elapsed else 0.0,
        "errors": sum(g.publisher.stats.connect_failures for g in gateways),
    }
