"""CAN frames of one simulated vehicle, for any DBC.

Signals named like the outputs of :class:`simulator.vehicle_model.VehicleModel`
(the signal names of ``dbc/reference_car.dbc``) carry physics values; every
other signal gets a plausible generic value (see :mod:`simulator.generic_signals`).
Each message is sent at its ``GenMsgCycleTime`` (100 ms if missing) with a
seeded phase offset.  Payloads are encoded with cantools and cached until the
values they carry change; rolling counters and checksums are patched into the
cached payload bit by bit.
"""
from __future__ import annotations

import functools
import heapq
import logging
import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

import can
import cantools

from minute_packet import frame_messages

from simulator.generic_signals import GenericValues, SignalKind, classify
from simulator.vehicle_model import VehicleModel

log = logging.getLogger(__name__)

DEFAULT_CYCLE_MS = 100.0
PHYSICS_STEP_US = 20_000
GENERIC_STEP_US = 500_000
MAX_VARIANTS = 256


@dataclass
class _Variant:
    """One multiplexer combination of a message: the signals it carries and its cached payload."""

    names: tuple[str, ...]
    fixed: dict[str, int]  # multiplexer signal -> raw selector value
    kinds: tuple[SignalKind, ...] = ()
    keys: tuple[str, ...] = ()  # generic-value keys ("<frame id>:<signal>")
    inputs: tuple[float, ...] | None = None
    base: int = 0
    gen: int = -1
    counters: list[tuple[int, list[int], int]] = field(default_factory=list)  # (mask, table, modulus)
    checksums: list[tuple[int, list[int], int]] = field(default_factory=list)  # (mask, bit positions, bits)


@dataclass
class _Plan:
    msg: cantools.database.can.Message
    period_us: int
    variants: list[_Variant]
    next_variant: int = 0
    count: int = 0


def _expand(tree: list) -> list[list[tuple[str, int | None]]]:
    """All signal combinations of a cantools ``signal_tree`` (one per multiplexer path)."""
    variants: list[list[tuple[str, int | None]]] = [[]]
    for node in tree:
        if isinstance(node, str):
            variants = [v + [(node, None)] for v in variants]
            continue
        for mux_name, choices in node.items():
            sub = [[(mux_name, int(val))] + sv for val, subtree in choices.items() for sv in _expand(subtree)]
            variants = [v + s for v in variants for s in sub][:MAX_VARIANTS] if sub else variants
    return variants


def _positions(sig: cantools.database.can.Signal) -> list[int]:
    """Payload bit (byte * 8 + bit in byte, LSB 0) of each bit of the raw value, least significant first."""
    if sig.byte_order == "little_endian":
        return [(sig.start + i) // 8 * 8 + (sig.start + i) % 8 for i in range(sig.length)]
    p0 = (sig.start // 8) * 8 + (7 - sig.start % 8)
    return [(p0 + sig.length - 1 - i) // 8 * 8 + 7 - (p0 + sig.length - 1 - i) % 8 for i in range(sig.length)]


@functools.lru_cache(maxsize=4096)
def _selector_overlapped(msg: cantools.database.can.Message) -> bool:
    """A multiplexer selector shares bits with another signal (cantools would OR them together)."""
    selectors = [s for s in msg.signals if s.is_multiplexer]
    if not selectors:
        return False
    taken = {p for s in selectors for p in _positions(s)}
    return any(taken.intersection(_positions(s)) for s in msg.signals if not s.is_multiplexer)


def _manual_encode(msg: cantools.database.can.Message, data: dict[str, float], scaling: bool) -> int:
    """Bit-by-bit encoder for messages cantools cannot encode (overlapping signals in sloppy DBCs).

    Returns the payload as a big-endian integer; bits past the frame end are dropped.
    """
    nbytes = msg.length
    out = 0
    # selectors last: where a sloppy DBC overlaps a selector with another signal, the selector's
    # bits must win, or the frame would carry a multiplexer id of no branch
    for sig in sorted(msg.signals, key=lambda s: bool(s.is_multiplexer)):
        if sig.name not in data:
            continue
        value = data[sig.name]
        if sig.is_float:
            fmt = (">f", ">I") if sig.length == 32 else (">d", ">Q")
            raw = struct.unpack(fmt[1], struct.pack(fmt[0], float(value)))[0]
        else:
            # a scale of 0 makes every raw value mean the offset: send 0
            raw = (round((value - sig.offset) / sig.scale) if sig.scale else 0) if scaling else int(value)
        raw &= (1 << sig.length) - 1
        for i, pos in enumerate(_positions(sig)):  # a later signal's bits replace an earlier one's
            byte, bit = divmod(pos, 8)
            if byte < nbytes:
                mask = 1 << ((nbytes - 1 - byte) * 8 + bit)
                out = out | mask if raw >> i & 1 else out & ~mask
    return out


def _encode(msg: cantools.database.can.Message, data: dict[str, float], scaling: bool) -> int:
    """Payload of ``msg`` as a big-endian integer, encoded by cantools where it can."""
    if _selector_overlapped(msg):
        return _manual_encode(msg, data, scaling)  # its selector bits must win
    try:
        return int.from_bytes(msg.encode(data, scaling=scaling, strict=False), "big")
    except (OverflowError, ValueError, KeyError, ZeroDivisionError, cantools.database.EncodeError):
        return _manual_encode(msg, data, scaling)


class CanVehicle:
    """The CAN frames one simulated vehicle puts on its bus."""

    def __init__(self, db: cantools.database.Database, *, seed: int, start_time: float,
                 profile: str = "calm") -> None:
        self.db = db
        self.start_time = float(start_time)
        self.model = VehicleModel(seed, profile, time_of_day_h=(self.start_time % 86400.0) / 3600.0)
        self._values = self.model.values()
        rng = random.Random(f"can-vehicle:{seed}")
        self._generic = GenericValues(random.Random(f"generic-signals:{seed}"))
        self.kinds: dict[str, SignalKind] = {}  # "<frame id>:<signal>" -> how it is driven
        self._plans: list[_Plan] = []
        self._heap: list[tuple[int, int]] = []
        sent = {id(m) for m in frame_messages(db)}  # one frame per id, as the bus carries it
        for msg in (m for m in db.messages if id(m) in sent):
            cycle = msg.cycle_time if msg.cycle_time else DEFAULT_CYCLE_MS
            period = max(1000, int(round(cycle * 1000)))
            plan = _Plan(msg, period, [self._variant(msg, v) for v in _expand(msg.signal_tree)])
            self._heap.append((rng.randrange(period), len(self._plans)))
            self._plans.append(plan)
        heapq.heapify(self._heap)
        self._now_us = 0
        self._phys_us = 0
        self._generic_us = 0
        self._gen = 0
        driven = sum(k.kind == "physics" for k in self.kinds.values())
        log.debug("CanVehicle seed=%s: %d messages, %d signals (%d from physics)",
                  seed, len(self._plans), len(self.kinds), driven)

    # ------------------------------------------------------------------ setup
    def _variant(self, msg: cantools.database.can.Message, combo: list[tuple[str, int | None]]) -> _Variant:
        fixed = {name: val for name, val in combo if val is not None}
        names = tuple(name for name, val in combo if val is None)
        var = _Variant(names, fixed)
        kinds, keys = [], []
        for name in names:
            sig = msg.get_signal_by_name(name)
            key = f"{msg.frame_id}:{name}"
            kind = self.kinds.get(key) or classify(sig, name in self._values)
            self.kinds[key] = kind
            kinds.append(kind)
            keys.append(key)
            if kind.kind == "counter":
                mask, bits = self._probe(msg, var, sig)
                table = [self._place(bits, k) for k in range(kind.modulus)]
                var.counters.append((mask, table, kind.modulus))
            elif kind.kind == "checksum":
                mask, bits = self._probe(msg, var, sig)
                var.checksums.append((mask, bits, len(bits)))
            else:
                self._generic.register(key, kind)
        var.kinds, var.keys = tuple(kinds), tuple(keys)
        return var

    @staticmethod
    def _probe(msg: cantools.database.can.Message, var: _Variant, sig: cantools.database.can.Signal
               ) -> tuple[int, list[int]]:
        """Payload bit (as a big-endian int mask) of each bit of ``sig``'s raw value."""
        zero: dict[str, float] = {n: 0 for n in (*var.names, *var.fixed)}
        zero.update(var.fixed)
        base = _encode(msg, zero, scaling=False)
        bits = []
        for i in range(sig.length):
            raw = -(1 << i) if sig.is_signed and i == sig.length - 1 else 1 << i
            data = dict(zero, **{sig.name: raw})
            bits.append(_encode(msg, data, scaling=False) ^ base)
        mask = 0
        for b in bits:
            mask |= b
        return mask, bits

    @staticmethod
    def _place(bits: list[int], value: int) -> int:
        out = 0
        for i, b in enumerate(bits):
            if value >> i & 1:
                out |= b
        return out

    # ------------------------------------------------------------------ frames
    def frames(self, duration_s: float) -> Iterator[can.Message]:
        """Frames in timestamp order for ``duration_s`` simulated seconds.

        ``msg.timestamp`` is ``start_time`` + simulated time; calling again
        continues where the previous call stopped.
        """
        end_us = self._now_us + max(0, int(round(duration_s * 1e6)))
        heap, plans, start = self._heap, self._plans, self.start_time
        done = False
        try:
            while heap and heap[0][0] < end_us:
                t_us, idx = heapq.heappop(heap)
                self._now_us = t_us  # if the caller stops early, the next call continues from here
                self._advance_to(t_us)
                plan = plans[idx]
                heapq.heappush(heap, (t_us + plan.period_us, idx))
                msg = plan.msg
                yield can.Message(timestamp=start + t_us / 1e6, arbitration_id=msg.frame_id,
                                  is_extended_id=msg.is_extended_frame, is_fd=msg.is_fd,
                                  bitrate_switch=msg.is_fd, data=self._payload(plan), is_rx=False)
            done = True
        finally:
            if done:
                self._now_us = max(self._now_us, end_us)

    def _advance_to(self, t_us: int) -> None:
        stepped = False
        while self._phys_us + PHYSICS_STEP_US <= t_us:
            self.model.step(PHYSICS_STEP_US / 1e6)
            self._phys_us += PHYSICS_STEP_US
            stepped = True
        if stepped:
            self._values = self.model.values()
            self._gen += 1
        if self._generic_us + GENERIC_STEP_US <= t_us:
            while self._generic_us + GENERIC_STEP_US <= t_us:
                self._generic.step()
                self._generic_us += GENERIC_STEP_US
            self._gen += 1

    def _payload(self, plan: _Plan) -> bytes:
        var = plan.variants[plan.next_variant]
        plan.next_variant = (plan.next_variant + 1) % len(plan.variants)
        if var.gen != self._gen:
            var.gen = self._gen
            values, generic = self._values, self._generic.values
            inputs = tuple(k.clamp(values[k.name]) if k.kind == "physics" else generic.get(key, 0.0)
                           for k, key in zip(var.kinds, var.keys))
            if inputs != var.inputs:
                var.inputs = inputs
                data: dict[str, float] = dict(zip(var.names, inputs))
                for name, raw in var.fixed.items():  # multiplexer selectors are raw values
                    sig = plan.msg.get_signal_by_name(name)
                    data[name] = raw * sig.scale + sig.offset
                var.base = _encode(plan.msg, data, scaling=True)
        payload = var.base
        for mask, table, modulus in var.counters:
            payload = (payload & ~mask) | table[plan.count % modulus]
        plan.count += 1
        length = plan.msg.length
        if var.checksums:
            for mask, bits, nbits in var.checksums:
                payload &= ~mask
            fid = plan.msg.frame_id
            total = (fid & 0xFF) + (fid >> 8 & 0xFF) + length + sum(payload.to_bytes(length, "big"))
            for mask, bits, nbits in var.checksums:
                payload |= self._place(bits, total & ((1 << nbits) - 1))
        return payload.to_bytes(length, "big")
