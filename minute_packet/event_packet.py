"""Event packets (format version 1): what a gateway's edge trigger sends at once, see ``docs/event-packet.md``.

Wire layout::

    b"EV" | version (1 byte) | flags (1 byte, 0) | zstd frame of a msgpack map

An event packet says which trigger fired, at which millisecond (the time of the CAN frame that
made its condition true), and carries the full-rate physical values of chosen signals: part 0
is sent the moment the trigger fires and holds the values from ``before_ms`` before it up to the
trigger; part 1 (only when the trigger captures after it) follows with the values up to
``after_ms`` after it. (vehicle, boot, seq) identifies a packet; seq counts the gateway's event
packets per boot id, separately from minute packets. Decoding is strict and bounded; every
problem raises :class:`PacketDecodeError` with a ``reason``.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import msgpack
import zstandard

from .errors import PacketDecodeError, PacketEncodeError

MAGIC = b"EV"
VERSION = 1
MAX_PACKET_BYTES = 1 << 20
MAX_BODY_BYTES = 4 << 20
MAX_SIGNALS = 256
MAX_SAMPLES = 200_000  # over all signals
MAX_NAME_BYTES = 128
MAX_CONDITION_BYTES = 4000
MAX_WINDOW_MS = 600_000
ZSTD_LEVEL = 3


@dataclasses.dataclass(frozen=True, eq=False)
class EventPacket:
    """One part of one fired trigger. ``signals[name] = (offsets_ms, values)``: offsets from
    ``time_ms`` (negative before the trigger), physical values as floats."""

    vehicle_id: str
    model: str
    boot_id: bytes
    seq: int
    trigger: str
    time_ms: int
    condition: str
    part: int = 0
    before_ms: int = 0
    after_ms: int = 0
    signals: Mapping[str, tuple[tuple[int, ...], tuple[float, ...]]] = dataclasses.field(default_factory=dict)

    @property
    def key(self) -> tuple[str, bytes, int]:
        return (self.vehicle_id, self.boot_id, self.seq)

    def same_content(self, other: EventPacket) -> bool:
        return all(getattr(self, f.name) == getattr(other, f.name) for f in dataclasses.fields(self))


def _check(p: EventPacket) -> None:
    if len(p.boot_id) != 16 or not (0 <= p.seq < 1 << 63) or not (0 <= p.time_ms < 1 << 48):
        raise PacketEncodeError("boot_id must be 16 bytes, seq and time_ms non-negative")
    if p.part not in (0, 1) or not (0 <= p.before_ms <= MAX_WINDOW_MS) or not (0 <= p.after_ms <= MAX_WINDOW_MS):
        raise PacketEncodeError(f"part must be 0 or 1 and windows within 0..{MAX_WINDOW_MS} ms")
    for text, limit in ((p.vehicle_id, MAX_NAME_BYTES), (p.model, MAX_NAME_BYTES), (p.trigger, MAX_NAME_BYTES),
                        (p.condition, MAX_CONDITION_BYTES)):
        if not isinstance(text, str) or not text or len(text.encode()) > limit:
            raise PacketEncodeError("vid, model, trigger and condition must be non-empty strings within bounds")
    if len(p.signals) > MAX_SIGNALS or sum(len(o) for o, _ in p.signals.values()) > MAX_SAMPLES:
        raise PacketEncodeError(f"at most {MAX_SIGNALS} signals and {MAX_SAMPLES} samples")
    for name, (offsets, values) in p.signals.items():
        if len(offsets) != len(values) or any(not math.isfinite(v) for v in values):
            raise PacketEncodeError(f"signal {name!r}: offsets and finite values of one length")


def encode(p: EventPacket, *, level: int = ZSTD_LEVEL) -> bytes:
    """The wire form of an event packet."""
    _check(p)
    body = {"vid": p.vehicle_id, "model": p.model, "boot": p.boot_id, "seq": p.seq, "trig": p.trigger,
            "t": p.time_ms, "cond": p.condition, "part": p.part, "pre": p.before_ms, "post": p.after_ms,
            "sig": {name: [list(map(int, o)), list(map(float, v))] for name, (o, v) in p.signals.items()}}
    raw = msgpack.packb(body, use_bin_type=True)
    return MAGIC + bytes((VERSION, 0)) + zstandard.ZstdCompressor(level=level, write_content_size=True).compress(raw)


def _field(body: dict, key: str, kind: type) -> Any:
    if key not in body:
        raise PacketDecodeError("malformed", f"missing field {key!r}")
    value = body[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise PacketDecodeError("malformed", f"field {key!r} has type {type(value).__name__}")
    return value


def decode(data: bytes) -> EventPacket:
    """Parse an event packet, raising :class:`PacketDecodeError` on any defect."""
    if len(data) > MAX_PACKET_BYTES:
        raise PacketDecodeError("too_large", f"{len(data)} bytes exceeds {MAX_PACKET_BYTES}")
    if len(data) < 4 or data[:2] != MAGIC:
        raise PacketDecodeError("bad_magic", "not an event packet")
    if data[2] != VERSION:
        raise PacketDecodeError("unsupported_version", f"event format version {data[2]}, this codec reads {VERSION}")
    try:
        size = zstandard.frame_content_size(data[4:])
        if size < 0 or size > MAX_BODY_BYTES:
            raise PacketDecodeError("too_large", f"body of {size} bytes (unknown or over {MAX_BODY_BYTES})")
        raw = zstandard.ZstdDecompressor().decompress(data[4:], max_output_size=MAX_BODY_BYTES)
    except zstandard.ZstdError as exc:
        raise PacketDecodeError("corrupt_compression", str(exc)) from None
    try:
        body = msgpack.unpackb(raw, raw=False, strict_map_key=True, max_array_len=MAX_SAMPLES,
                               max_map_len=MAX_SIGNALS + 16)
    except Exception as exc:  # msgpack raises several unrelated types
        raise PacketDecodeError("malformed", f"bad msgpack body: {exc}") from None
    if not isinstance(body, dict):
        raise PacketDecodeError("malformed", "body is not a map")
    sig = _field(body, "sig", dict)
    signals: dict[str, tuple[tuple[int, ...], tuple[float, ...]]] = {}
    for name, pair in sig.items():
        if (not isinstance(pair, list) or len(pair) != 2 or not all(isinstance(x, list) for x in pair)
                or len(pair[0]) != len(pair[1]) or not all(type(o) is int for o in pair[0])
                or not all(type(v) is float for v in pair[1])):
            raise PacketDecodeError("malformed", f"signal {name!r} is not [offsets, values] of one length")
        signals[name] = (tuple(pair[0]), tuple(pair[1]))
    try:
        packet = EventPacket(
            vehicle_id=_field(body, "vid", str), model=_field(body, "model", str), boot_id=_field(body, "boot", bytes),
            seq=_field(body, "seq", int), trigger=_field(body, "trig", str), time_ms=_field(body, "t", int),
            condition=_field(body, "cond", str), part=_field(body, "part", int), before_ms=_field(body, "pre", int),
            after_ms=_field(body, "post", int), signals=signals)
        _check(packet)
    except PacketEncodeError as exc:
        raise PacketDecodeError("malformed", str(exc)) from None
    return packet
