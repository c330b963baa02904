"""Fault injection between the fleet generator and the broker: duplicate, delay, reorder, corrupt, disconnect.

:class:`FaultInjector` decides per packet, from the seed alone, what happens
to it, and turns a window's encoded packets into the list of messages to
send, in order. Delayed packets are held until the simulated clock passes
their release time; a reordered packet is sent right after the vehicle's
next packet; a corrupted packet is replaced by a mangled copy (the sink must
quarantine it, so it is not expected in the lake); a duplicate is sent twice.
Every decision is reported to a callback so the manifest records it.
"""
from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Callable

import numpy as np

from .fleet_spec import FaultRates

FAULT_KINDS = ("corrupt", "duplicate", "delay", "reorder")


@dataclasses.dataclass(frozen=True)
class Outgoing:
    """One message to publish for a vehicle."""

    vehicle: int  # fleet index
    seq: int
    payload: bytes
    copy: bool = False  # a duplicate or otherwise extra copy


def corrupt(payload: bytes, mode: int) -> tuple[bytes, str]:
    """A mangled payload the sink's decoder must reject, and how it was mangled."""
    if mode == 0:
        return b"XX" + payload[2:], "bad_magic"
    return payload[: max(5, len(payload) // 2)], "truncated"


class FaultInjector:
    """Seeded per-packet faults; ``record(kind, vehicle, seq, detail)`` is told about each one."""

    def __init__(self, rates: FaultRates, seed: int, record: Callable[[str, int, int, dict], None]) -> None:
        self.rates = rates
        self.seed = seed
        self.record = record
        self._held: list[tuple[int, int, int, bytes]] = []  # (release time, vehicle, seq, payload)
        self._reorder: dict[int, Outgoing] = {}

    @property
    def active(self) -> bool:
        r = self.rates
        return any((r.duplicate, r.delay, r.reorder, r.corrupt))

    def decide(self, group: int, window: int, n: int) -> np.ndarray:
        """Fault code per vehicle of a group's window: -1 none, else an index into ``FAULT_KINDS``."""
        r = self.rates
        if not self.active:
            return np.full(n, -1)
        u = np.random.default_rng([self.seed, 0xFA17, group, window]).random(n)
        edges = np.cumsum([r.corrupt, r.duplicate, r.delay, r.reorder])
        code = np.searchsorted(edges, u, side="right")
        return np.where(code < len(FAULT_KINDS), code, -1)

    def apply(self, group: int, window: int, t_end: int, vehicles: list[int], seqs: list[int],
              payloads: list[bytes]) -> list[Outgoing]:
        """Messages to send now for a group's window (plus held ones now due)."""
        codes = self.decide(group, window, len(vehicles))
        out: list[Outgoing] = []
        for vid, seq, payload, code in zip(vehicles, seqs, payloads, codes):
            kind = FAULT_KINDS[code] if code >= 0 else None
            item = Outgoing(vid, seq, payload)
            if kind == "corrupt":
                bad, how = corrupt(payload, (seq + vid) % 2)
                self.record("corrupt", vid, seq, {"mode": how})
                item = Outgoing(vid, seq, bad)
            elif kind == "delay":
                release = t_end + int(self.rates.delay_s)
                self.record("delay", vid, seq, {"delay_s": self.rates.delay_s})
                heapq.heappush(self._held, (release, vid, seq, payload))
                item = None  # type: ignore[assignment]
            elif kind == "reorder" and vid not in self._reorder:
                self.record("reorder", vid, seq, {})
                self._reorder[vid] = item
                item = None  # type: ignore[assignment]
            if item is not None:
                out.append(item)
                if vid in self._reorder and self._reorder[vid].seq != seq:
                    out.append(self._reorder.pop(vid))
                if kind == "duplicate":
                    self.record("duplicate", vid, seq, {})
                    out.append(Outgoing(vid, seq, payload, copy=True))
        return out + self.due(t_end)

    def due(self, now: int) -> list[Outgoing]:
        """Held (delayed) packets whose release time has come."""
        out = []
        while self._held and self._held[0][0] <= now:
            _, vid, seq, payload = heapq.heappop(self._held)
            out.append(Outgoing(vid, seq, payload))
        return out

    def drain(self) -> list[Outgoing]:
        """Everything still held, at the end of a run."""
        out = [Outgoing(v, s, p) for _, v, s, p in sorted(self._held)]
        self._held.clear()
        out += list(self._reorder.values())
        self._reorder.clear()
        return out

    def disconnects(self, window: int, connections: int) -> list[int]:
        """Connections to sever during this window."""
        if self.rates.disconnect <= 0:
            return []
        u = np.random.default_rng([self.seed, 0xD15C, window]).random(connections)
        return [int(i) for i in np.flatnonzero(u < self.rates.disconnect)]
