"""Physical values → raw bit patterns → :class:`MinutePacket`, exactly as the schema says.

:class:`WindowBuilder` collects one window (``rows`` seconds) of a group of
vehicles of one model: driven signals as physical values, every other
column a per-vehicle constant, rolling counters and checksums derived from
the time. :meth:`WindowBuilder.packets` converts with each column's
scale/offset (``raw = round((phys - offset) / scale)``, clamped to the
signal's DBC range and to what its bits hold; two's complement for signed
kinds via an int64 view; IEEE bits for float kinds) and cuts one packet per
vehicle with every cell present, so the sink stores what the manifest says.
"""
from __future__ import annotations

import math

import numpy as np

from minute_packet import Column, MinutePacket, Schema

from .generic_signals import CHECKSUM_NAME, COUNTER_NAME


# Per-vehicle constants for signals the fleet physics does not drive: uniform (lo, hi) physical values.
VEHICLE_CONSTANTS: dict[str, tuple[float, float]] = {
    "TyrePressureFL": (2.2, 2.5), "TyrePressureFR": (2.2, 2.5), "TyrePressureRL": (2.2, 2.5),
    "TyrePressureRR": (2.2, 2.5), "TyreTempFL": (15, 30), "TyreTempFR": (15, 30), "TyreTempRL": (15, 30),
    "TyreTempRR": (15, 30), "OilLevel": (65, 95), "ServiceDueDistance": (-300, 25000),
    "ServiceDueDays": (-20, 365), "ClimateSetpoint": (20.5, 22.5), "GnssHdop": (0.6, 1.2),
    "GnssVdop": (0.8, 1.7), "GnssHorizontalAccuracy": (1.0, 2.0), "GnssVerticalAccuracy": (1.5, 3.0),
    "CellularSignal": (-100, -65), "ImuTemp": (20, 40), "TransOilTemp": (60, 85), "ExhaustGasTemp": (300, 450),
    "AmbientLight": (5, 30000), "ManifoldPressure": (30, 60), "FuelRailPressure": (40, 60),
    "LambdaActual": (0.98, 1.02), "IgnitionTiming": (10, 30), "TransTorqueLimit": (400, 400),
    "EpsState": (1, 1), "PassengerAirbagState": (1, 1), "TripAvgSpeed": (20, 60),
    "TripAvgConsumption": (5, 9), "TripFuelUsed": (0, 5),
}


def raw_bounds(col: Column) -> tuple[float, float]:
    """Raw range of an integer column: its bits' range intersected with the DBC min/max."""
    bits = col.bit_length
    if col.kind == "int":
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    else:
        lo, hi = 0, (1 << bits) - 1
    if col.minimum is not None and col.maximum is not None and col.scale:
        a, b = (col.minimum - col.offset) / col.scale, (col.maximum - col.offset) / col.scale
        a, b = min(a, b), max(a, b)
        lo, hi = max(lo, math.ceil(a - 1e-9)), min(hi, math.floor(b + 1e-9))
    return float(lo), float(hi)


def to_raw(cols: list[Column], phys: np.ndarray) -> np.ndarray:
    """Raw uint64 bit patterns of physical values; ``phys`` has the columns on axis 0."""
    out = np.empty(phys.shape, dtype=np.uint64)
    for k, col in enumerate(cols):
        raw = (phys[k] - col.offset) / col.scale
        if col.kind == "f32":
            out[k] = raw.astype(np.float32).view(np.uint32).astype(np.uint64)
        elif col.kind == "f64" and col.aggregate != "mean":
            out[k] = raw.astype(np.float64).view(np.uint64)
        else:
            lo, hi = raw_bounds(col)
            rounded = np.clip(np.rint(raw), lo, hi)
            if col.kind == "f64":  # the mean aggregate of an integer signal: float64 bits of the raw mean
                out[k] = rounded.view(np.uint64)
            else:
                out[k] = rounded.astype(np.int64).view(np.uint64)
    return out


class WindowBuilder:
    """One window of packets for a group of vehicles sharing a model (and so a schema)."""

    def __init__(self, schema: Schema, model: str, vehicle_ids: list[str], boot_ids: list[bytes],
                 rows: int, driven: set[str], seed: int) -> None:
        self.schema, self.model, self.rows = schema, model, rows
        self.vehicle_ids, self.boot_ids = vehicle_ids, boot_ids
        n, cols = len(vehicle_ids), list(schema.columns)
        self.n = n
        rng = np.random.default_rng(seed)
        self.driven_idx = [i for i, c in enumerate(cols) if c.signal in driven]
        self.driven_cols = [cols[i] for i in self.driven_idx]
        self.driven_names = [c.signal for c in self.driven_cols]
        self.counter_idx = [i for i, c in enumerate(cols) if i not in set(self.driven_idx) and COUNTER_NAME.search(c.signal)]
        self.checksum_idx = [i for i, c in enumerate(cols)
                             if i not in set(self.driven_idx) and CHECKSUM_NAME.search(c.signal)]
        special = set(self.driven_idx) | set(self.counter_idx) | set(self.checksum_idx)
        self.const_idx = [i for i in range(len(cols)) if i not in special]
        const_phys = np.empty((len(self.const_idx), n, 1))
        for k, i in enumerate(self.const_idx):
            c = cols[i]
            lo, hi = VEHICLE_CONSTANTS.get(c.signal, (0.0, 0.0))
            const_phys[k, :, 0] = rng.uniform(lo, hi, n) if hi > lo else lo
        self.const_raw = to_raw([cols[i] for i in self.const_idx], const_phys)[:, :, 0]  # (k, n)
        self.moduli = np.array([2 ** cols[i].bit_length for i in self.counter_idx], dtype=np.int64)
        self.phase = rng.integers(0, 1 << 16, n)
        self.phys = np.zeros((len(self.driven_idx), n, rows))
        self.present = np.ones((len(cols), rows), dtype=bool)
        self.fingerprint = schema.fingerprint

    def set_row(self, row: int, values: dict[str, np.ndarray]) -> None:
        """Store one second of physical values (arrays over the group's vehicles)."""
        for k, name in enumerate(self.driven_names):
            self.phys[k, :, row] = values[name]

    def values(self, t0: int) -> np.ndarray:
        """The window's raw matrix, shape (vehicles, columns, rows), for rows starting at ``t0``."""
        n, rows = self.n, self.rows
        full = np.empty((n, len(self.schema.columns), rows), dtype=np.uint64)
        raw = to_raw(self.driven_cols, self.phys)  # (k, n, rows)
        full[:, self.driven_idx, :] = raw.transpose(1, 0, 2)
        full[:, self.const_idx, :] = self.const_raw.T[:, :, None]
        t = np.arange(t0, t0 + rows, dtype=np.int64)
        if self.counter_idx:
            counts = (t[None, None, :] + self.phase[:, None, None]) % self.moduli[None, :, None]
            full[:, self.counter_idx, :] = counts.astype(np.uint64)
        if self.checksum_idx:
            sums = (t[None, None, :] * 7 + self.phase[:, None, None] * 13
                    + np.arange(len(self.checksum_idx))[None, :, None]) % 256
            full[:, self.checksum_idx, :] = sums.astype(np.uint64)
        return full

    def packets(self, t0: int, seqs: list[int]) -> list[MinutePacket]:
        """One packet per vehicle for the window starting at ``t0``, with the given sequence numbers."""
        full = self.values(t0)
        return [MinutePacket(vehicle_id=vid, model=self.model, boot_id=boot, seq=seq, start_time=t0,
                             fingerprint=self.fingerprint, values=full[i], present=self.present)
                for i, (vid, boot, seq) in enumerate(zip(self.vehicle_ids, self.boot_ids, seqs))]
