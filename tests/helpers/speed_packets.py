"""Minute packets with chosen physical values, for the speed layer's tests."""
from __future__ import annotations

import numpy as np

from minute_packet import MinutePacket, Schema
from simulator.fleet_packets import to_raw

BOOT = bytes(range(16))


def make_packet(schema: Schema, vehicle: str, seq: int, start: int, values: dict[str, list],
                boot: bytes = BOOT, rows: int | None = None, model: str = "reference-car") -> MinutePacket:
    """A packet of ``rows`` seconds from ``start``: ``values[name][i]`` is the physical value of column
    ``name`` at second i (None = absent); every other column is absent."""
    n = rows or max(len(v) for v in values.values())
    index = {c.name: i for i, c in enumerate(schema.columns)}
    raw = np.zeros((len(schema.columns), n), dtype=np.uint64)
    present = np.zeros((len(schema.columns), n), dtype=bool)
    for name, series in values.items():
        i = index[name]
        col = schema.columns[i]
        phys = np.array([0.0 if v is None else float(v) for v in series[:n]] + [0.0] * (n - len(series[:n])))
        raw[i] = to_raw([col], phys[None, :])[0]
        present[i] = [v is not None for v in series[:n]] + [False] * (n - len(series[:n]))
    return MinutePacket(vehicle_id=vehicle, model=model, boot_id=boot, seq=seq, start_time=start,
                        fingerprint=schema.fingerprint, values=raw, present=present)
