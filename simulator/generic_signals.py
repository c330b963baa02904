"""Plausible values for DBC signals the physics model knows nothing about.

:func:`classify` sorts a cantools signal into physics-driven, rolling counter,
checksum, value-table choice, 1-bit flag or numeric random walk and works out
the physical range it may take (its min/max intersected with what its raw
bits can hold).  :class:`GenericValues` holds a seeded slow random walk for
every generic signal.
"""
from __future__ import annotations

import math

import logging
import random
import re
from dataclasses import dataclass

import cantools

log = logging.getLogger(__name__)

# signal names that mark rolling counters and checksums (shared with the fleet packet generator)
COUNTER_NAME = re.compile(r"(counter|_cnt|cnt$|alive|rolling|^cnt)", re.IGNORECASE)
CHECKSUM_NAME = re.compile(r"(checksum|chksum|crc|chks)", re.IGNORECASE)
FLOAT_DEFAULT_RANGE = (-1000.0, 1000.0)


@dataclass(frozen=True)
class SignalKind:
    """How one signal gets its values, and the physical range it must stay in."""

    name: str
    kind: str  # physics | counter | checksum | choice | flag | walk
    lo: float
    hi: float
    scale: float = 1.0
    offset: float = 0.0
    is_float: bool = False
    modulus: int = 0
    choices: tuple[float, ...] = ()

    def clamp(self, value: float) -> float:
        """``value`` limited to the signal's range (NaN becomes the lower bound)."""
        if value != value:  # NaN
            return self.lo
        return self.lo if value < self.lo else self.hi if value > self.hi else value

    def quantise(self, value: float) -> float:
        """``value`` rounded to the signal's resolution and clamped."""
        if self.is_float:
            return self.clamp(value)
        if not (self.scale and math.isfinite(self.scale) and math.isfinite(self.offset)):
            return self.offset  # a scale of 0 (or beyond float range): every raw value means the offset
        raw = round((value - self.offset) / self.scale)
        return self.clamp(raw * self.scale + self.offset)


def raw_range(sig: cantools.database.can.Signal) -> tuple[float, float]:
    """Physical range the signal's raw bits can represent."""
    if sig.is_float:
        return FLOAT_DEFAULT_RANGE
    bits = min(sig.length, 64)  # a longer signal (a CAN FD blob) gets values in its low 64 bits
    if sig.is_signed:
        lo_raw, hi_raw = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    else:
        lo_raw, hi_raw = 0, (1 << bits) - 1
    a, b = lo_raw * sig.scale + sig.offset, hi_raw * sig.scale + sig.offset
    return (a, b) if a <= b else (b, a)


def classify(sig: cantools.database.can.Signal, physics: bool) -> SignalKind:
    """Decide how ``sig`` gets its values; ``physics`` says the model provides it."""
    lo, hi = raw_range(sig)
    if sig.minimum is not None and sig.maximum is not None and sig.minimum < sig.maximum:
        lo2, hi2 = max(lo, float(sig.minimum)), min(hi, float(sig.maximum))
        if lo2 <= hi2:
            lo, hi = lo2, hi2
    if not sig.is_float:  # keep the bounds on the raw grid so rounding cannot leave the range
        step = abs(sig.scale) or 1.0
        lo_r, hi_r = -((-(lo - sig.offset)) // step), (hi - sig.offset) // step
        if lo_r <= hi_r:
            lo, hi = lo_r * step + sig.offset, hi_r * step + sig.offset
    common = dict(name=sig.name, lo=lo, hi=hi, scale=sig.scale or 1.0, offset=sig.offset, is_float=sig.is_float)
    if physics:
        return SignalKind(kind="physics", **common)  # type: ignore[arg-type]
    if not sig.is_float and not sig.is_signed and sig.scale == 1 and sig.offset == 0:
        if CHECKSUM_NAME.search(sig.name):
            return SignalKind(kind="checksum", **common)  # type: ignore[arg-type]
        if COUNTER_NAME.search(sig.name) and sig.length <= 16:
            modulus = min(1 << sig.length, int(hi) + 1) if hi >= 1 else 1 << sig.length
            return SignalKind(kind="counter", modulus=modulus, **common)  # type: ignore[arg-type]
    if sig.choices:
        vals = tuple(sorted(float(int(k)) * sig.scale + sig.offset for k in sig.choices))
        vals = tuple(v for v in vals if lo <= v <= hi)
        if vals:
            return SignalKind(kind="choice", choices=vals, **common)  # type: ignore[arg-type]
    if sig.length == 1:
        return SignalKind(kind="flag", choices=(lo, hi), **common)  # type: ignore[arg-type]
    return SignalKind(kind="walk", **common)  # type: ignore[arg-type]


class GenericValues:
    """Seeded slow random walks for every registered generic signal, keyed by the caller's key."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.values: dict[str, float] = {}
        self._kinds: dict[str, SignalKind] = {}

    def register(self, key: str, kind: SignalKind) -> None:
        """Start a walk for ``key`` (no-op for physics, counters and checksums or a known key)."""
        if kind.kind not in ("choice", "flag", "walk") or key in self._kinds:
            return
        rng = self.rng
        self._kinds[key] = kind
        if kind.kind == "choice":
            value = rng.choice(kind.choices)
        elif kind.kind == "flag":
            value = kind.lo if rng.random() < 0.8 else kind.hi
        else:
            span = kind.hi - kind.lo
            value = kind.lo + span * rng.uniform(0.2, 0.6)
        self.values[key] = kind.quantise(value)

    def step(self) -> None:
        """One update tick: walks move a little, choices and flags switch now and then."""
        rng = self.rng
        for key, kind in self._kinds.items():
            r = rng.random()
            if kind.kind == "walk":
                if r < 0.3:
                    span = kind.hi - kind.lo
                    value = self.values[key] + rng.gauss(0.0, 0.01) * span
                    if value < kind.lo:
                        value = 2 * kind.lo - value
                    elif value > kind.hi:
                        value = 2 * kind.hi - value
                    self.values[key] = kind.quantise(value)
            elif r < (0.01 if kind.kind == "choice" else 0.005):
                self.values[key] = rng.choice(kind.choices)
