"""Frames in, minute packets out: the gateway's pure core (no I/O, no clock).

Every collected signal is sampled once per second of *frame time* (the
frame's timestamp, never the wall clock): ``last`` keeps the last value seen
in the second, ``min``/``max``/``mean`` see every frame. Seconds are bundled
into packets that never cross a minute boundary (``t0 // 60`` is the same for
all rows of a packet); a second in which a signal was not seen is explicitly
missing. For ``last``-only, non-multiplexed messages only the latest frame of
each second is decoded, so decode cost follows the number of IDs, not the
bus load.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import numpy as np

from dcm_base.logutil import RateLimitedLog
from minute_packet.codec import MinutePacket
from minute_packet.schema import Schema

from .decoder import FrameDecodeError, FrameDecoder, MessagePlan, to_bits

log = logging.getLogger(__name__)

WINDOW_S = 60


@dataclasses.dataclass
class SamplerStats:
    frames_seen: int = 0
    frames_ignored: int = 0  # IDs outside the collection config
    frames_malformed: int = 0
    frames_late: int = 0  # timestamp before the second being sampled: dropped
    frames_decoded: int = 0
    seconds_closed: int = 0
    packets: int = 0


class Sampler:
    """Samples frames of one vehicle into minute packets."""

    def __init__(
        self,
        db: Any,
        schema: Schema,
        *,
        vehicle_id: str,
        model: str,
        boot_id: bytes,
        first_seq: int = 0,
        clock: str = "frame",
    ) -> None:
        self.decoder = FrameDecoder(db, schema)
        self.schema = schema
        self.stats = SamplerStats()
        self._header = dict(vehicle_id=vehicle_id, model=model, boot_id=boot_id, fingerprint=schema.fingerprint, clock=clock)
        self._next_seq = first_seq
        ncol = len(schema.columns)
        self._values = np.zeros((ncol, WINDOW_S), dtype=np.uint64)
        self._present = np.zeros((ncol, WINDOW_S), dtype=bool)
        self._window: int | None = None  # start of the current minute window
        self._first_row = WINDOW_S
        self._last_row = -1
        self._second: int | None = None  # the second being sampled
        self._closed = -1  # last second already closed: frames at or before it are late
        self._latest: dict[int, bytes] = {}
        self._acc: dict[int, list] = {}  # column -> [last, min, max, sum, count] of raw values
        # schema v2: min/max are the physical extremes, which a negative scale takes from the raw max/min
        self._swapped = frozenset(i for i, c in enumerate(schema.columns)
                                  if schema.version >= 2 and c.aggregate in ("min", "max") and c.scale < 0)
        self._plans = self.decoder.plans
        self._bad_frames = RateLimitedLog(log, "malformed frame")

    @property
    def has_open_rows(self) -> bool:
        """Seconds are sampled that no packet carries yet."""
        return self._second is not None or self._last_row >= 0

    @property
    def next_seq(self) -> int:
        return self._next_seq

    def add(self, timestamp: float, key: int, data: bytes) -> list[MinutePacket]:
        """Feed one frame (``key`` from :func:`gateway.decoder.frame_key`); returns finished packets."""
        self.stats.frames_seen += 1
        plan = self._plans.get(key)
        if plan is None:
            self.stats.frames_ignored += 1
            return []
        sec = math.floor(timestamp)
        out: list[MinutePacket] = []
        if sec != self._second:
            if sec <= self._closed or (self._second is not None and sec < self._second):
                self.stats.frames_late += 1
                return out
            out = self._advance(sec)
        if plan.decode_each:
            self._accumulate(plan, data)
        else:
            self._latest[key] = data
        return out

    def flush(self) -> list[MinutePacket]:
        """Close the current second and emit what the current window holds."""
        self._close_second()
        self._second = None
        return self._emit()

    def _advance(self, sec: int) -> list[MinutePacket]:
        self._close_second()
        self._second = sec
        out: list[MinutePacket] = []
        window = sec - sec % WINDOW_S
        if self._window is not None and window != self._window:
            out = self._emit()
        self._window = window
        return out

    def _decode(self, plan: MessagePlan, data: bytes) -> dict[str, int | float] | None:
        """Raw values of a frame, or None (counted, logged at a sane rate) when it does not decode."""
        try:
            raw = FrameDecoder.decode(plan, data)
        except FrameDecodeError as exc:
            self.stats.frames_malformed += 1
            self._bad_frames.warning("%s", exc)
            return None
        self.stats.frames_decoded += 1
        return raw

    def _accumulate(self, plan: MessagePlan, data: bytes) -> None:
        raw = self._decode(plan, data)
        if raw is None:
            return
        for signal, index, _agg, _kind in plan.columns:
            v = raw.get(signal)
            if v is None:  # another mux value's signal
                continue
            acc = self._acc.get(index)
            if acc is None:
                self._acc[index] = [v, v, v, v, 1]
            else:
                acc[0] = v
                if v < acc[1]:
                    acc[1] = v
                if v > acc[2]:
                    acc[2] = v
                acc[3] += v
                acc[4] += 1

    def _close_second(self) -> None:
        if self._second is None or self._window is None:
            return
        row = self._second - self._window
        values = self._values[:, row]
        present = self._present[:, row]
        for key, data in self._latest.items():
            plan = self._plans[key]
            raw = self._decode(plan, data)
            if raw is None:
                continue
            for signal, index, _agg, kind in plan.columns:
                v = raw.get(signal)
                if v is not None:
                    values[index] = to_bits(v, kind)
                    present[index] = True
        for index, (last, lo, hi, total, count) in self._acc.items():
            col = self.schema.columns[index]
            agg = col.aggregate
            if index in self._swapped:  # negative scale: the raw maximum is the physical minimum
                lo, hi = hi, lo
            v = last if agg == "last" else lo if agg == "min" else hi if agg == "max" else total / count
            values[index] = to_bits(v, col.kind)
            present[index] = True
        self._latest.clear()
        self._acc.clear()
        self._closed = self._second
        self._first_row = min(self._first_row, row)
        self._last_row = max(self._last_row, row)
        self.stats.seconds_closed += 1

    def _emit(self) -> list[MinutePacket]:
        if self._window is None or self._last_row < 0:
            return []
        rows = slice(self._first_row, self._last_row + 1)
        packet = MinutePacket(
            seq=self._next_seq,
            start_time=self._window + self._first_row,
            values=self._values[:, rows].copy(),
            present=self._present[:, rows].copy(),
            **self._header,
        )
        self._next_seq += 1
        self.stats.packets += 1
        self._values.fill(0)
        self._present.fill(False)
        self._first_row, self._last_row = WINDOW_S, -1
        return [packet]
