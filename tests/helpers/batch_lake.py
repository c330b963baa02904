"""Crafted lakes for the batch-layer tests: 1 Hz traces cut into real minute packets, stored by a real Sink.

:func:`trace` integrates a list of pieces (drive, stand, park, gap) into per-second physical values
(speed, heading, GNSS position, odometer, ignition, engine state, fuel rate); :class:`CraftedLake`
cuts them into minute packets of the reference DBC's signals and stores them with
``cloud_sink.service.Sink.ingest`` (no MQTT), one flush per call, so each call writes new lake files.
"""
from __future__ import annotations

import dataclasses
import math
import uuid
from pathlib import Path

import numpy as np

import dbc
from cloud_sink.config import SinkConfig
from cloud_sink.intake import Incoming
from cloud_sink.service import Sink
from dcm.broker import BrokerUrl
from minute_packet import Collection, MinutePacket, encode, schema_from_dbc
from simulator.fleet_packets import to_raw

SECRET = b"batch-test-secret"
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
IGNITION_SIGNALS = ("VehicleSpeed", "Odometer", "Latitude", "Longitude", "GnssHeading", "IgnitionState",
                    "EngineState", "FuelConsumptionRate", "FuelVolume")
MOTION_SIGNALS = ("VehicleSpeed", "Odometer", "Latitude", "Longitude", "GnssHeading")
EARTH_RADIUS_M = 6_371_000.0


@dataclasses.dataclass(frozen=True)
class Piece:
    """``seconds`` of one behaviour: speed ramps from ``v0`` to ``v1`` km/h, heading turns ``turn`` deg/s."""

    seconds: int
    v0: float = 0.0
    v1: float | None = None
    ignition: bool = True
    turn: float = 0.0
    gap: bool = False  # no rows at all (the gateway was off or the data is lost)


def drive(seconds: int, kmh: float, turn: float = 0.0) -> Piece:
    return Piece(seconds, kmh, kmh, True, turn)


def ramp(seconds: int, v0: float, v1: float) -> Piece:
    return Piece(seconds, v0, v1, True)


def idle(seconds: int) -> Piece:
    return Piece(seconds, 0.0, 0.0, True)


def park(seconds: int) -> Piece:
    return Piece(seconds, 0.0, 0.0, False)


def gap(seconds: int) -> Piece:
    return Piece(seconds, gap=True)


@dataclasses.dataclass
class Trace:
    t: np.ndarray
    values: dict[str, np.ndarray]
    path_m: float  # ground-truth distance driven

    def at(self, t: int, name: str) -> float:
        return float(self.values[name][np.searchsorted(self.t, t)])


def trace(start_t: int, pieces: list[Piece], lat: float = 48.137, lon: float = 11.575, heading: float = 90.0,
          odo_km: float = 12_345.0, fuel_l: float = 40.0) -> Trace:
    """Per-second values; a speed is the value at the end of its second (like the 1 Hz sampler's ``last``)."""
    ts, rows = [], []
    t, v_prev, dist = start_t, 0.0, 0.0
    for p in pieces:
        for k in range(p.seconds):
            if p.gap:
                t += 1
                continue
            v1 = p.v0 if p.v1 is None else p.v1
            v = p.v0 + (v1 - p.v0) * (k + 1) / p.seconds if p.seconds else v1
            if not p.ignition:
                v = 0.0
            heading = (heading + p.turn) % 360.0
            step = (v + v_prev) / 2 / 3.6  # metres this second
            h = math.radians(heading)
            lat += math.degrees(step * math.cos(h) / EARTH_RADIUS_M)
            lon += math.degrees(step * math.sin(h) / (EARTH_RADIUS_M * math.cos(math.radians(lat))))
            dist += step
            odo_km += step / 1000.0
            rate = (0.8 + 0.05 * v) if p.ignition else 0.0
            fuel_l -= rate / 3600.0
            rows.append((v, lat, lon, heading, odo_km, 2.0 if p.ignition else 0.0, 2.0 if p.ignition else 0.0,
                         rate, fuel_l))
            ts.append(t)
            v_prev = v
            t += 1
    arr = np.array(rows, dtype=float).reshape(-1, 9)
    names = ("VehicleSpeed", "Latitude", "Longitude", "GnssHeading", "Odometer", "IgnitionState", "EngineState",
             "FuelConsumptionRate", "FuelVolume")
    return Trace(np.array(ts, dtype=np.int64), {n: arr[:, i] for i, n in enumerate(names)}, dist)


class CraftedLake:
    """A lake written by a real sink from crafted traces (vehicle layout by default)."""

    def __init__(self, root: Path, layout: str = "vehicle", worker: str = "w1") -> None:
        self.root = Path(root)
        db = dbc.load(dbc.REFERENCE_DBC)
        self.schemas = {
            "ignition-car": schema_from_dbc(db, Collection(signals=frozenset(IGNITION_SIGNALS))),
            "motion-car": schema_from_dbc(db, Collection(signals=frozenset(MOTION_SIGNALS))),
        }
        self.layout = layout
        self.sinks: dict[str, Sink] = {}
        self.boots: dict[str, bytes] = {}
        self.seqs: dict[str, int] = {}
        self.sink(worker)

    @property
    def lake(self) -> str:
        return str(self.root / "lake")

    def sink(self, worker: str) -> Sink:
        if worker not in self.sinks:
            s = Sink(SinkConfig(broker=BrokerUrl("127.0.0.1", 1), lake_root=(self.root / "lake").as_uri(),
                                state_path=self.root / f"{worker}.sqlite", quarantine_dir=self.root / "quarantine",
                                vehicle_secret=SECRET, client_id=worker, roll_interval_s=1, layout=self.layout,
                                buckets=2))
            s.ingest([Incoming(f"dcm/schemas/{sc.fingerprint.hex()}", sc.to_json(), 0, 1)
                      for sc in self.schemas.values()])
            self.sinks[worker] = s
        return self.sinks[worker]

    def packets(self, vehicle: str, tr: Trace, model: str = "ignition-car") -> list[MinutePacket]:
        """Minute packets covering ``tr`` (seconds without a row are absent in their packet)."""
        schema = self.schemas[model]
        cols = list(schema.columns)
        boot = self.boots.setdefault(vehicle, uuid.uuid5(uuid.NAMESPACE_OID, vehicle).bytes)
        out = []
        for minute in np.unique(tr.t // 60):
            sel = (tr.t // 60) == minute
            rows = (tr.t[sel] - minute * 60).astype(int)
            phys = np.zeros((len(cols), 60))
            present = np.zeros((len(cols), 60), dtype=bool)
            for i, c in enumerate(cols):
                phys[i, rows] = tr.values[c.signal][sel]
                present[i, rows] = True
            seq = self.seqs.get(vehicle, 0)
            self.seqs[vehicle] = seq + 1
            out.append(MinutePacket(vehicle_id=vehicle, model=model, boot_id=boot, seq=seq,
                                    start_time=int(minute * 60), fingerprint=schema.fingerprint,
                                    values=to_raw(cols, phys), present=present))
        return out

    def store(self, packets: list[MinutePacket], worker: str = "w1") -> int:
        """Ingest and flush: the packets land in new lake files."""
        s = self.sink(worker)
        s.ingest([Incoming(f"dcm/{p.vehicle_id}/telemetry", encode(p), i, 1) for i, p in enumerate(packets)])
        return s.flush()

    def add(self, vehicle: str, tr: Trace, model: str = "ignition-car", files: int = 1) -> list[MinutePacket]:
        """Store a trace's packets, spread over ``files`` flushes (so a trip crosses file boundaries)."""
        pk = self.packets(vehicle, tr, model)
        n = max(1, math.ceil(len(pk) / files))
        for i in range(0, len(pk), n):
            self.store(pk[i:i + n])
        return pk

    def close(self) -> None:
        for s in self.sinks.values():
            s.staging.close()
