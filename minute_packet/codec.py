"""Encode and decode minute packets (format version 2, version 1 still read; ``docs/packet-format.md``).

A minute packet carries up to ``MAX_ROWS`` one-second rows of one vehicle.
Values are the DBC's *raw* bit patterns (two's complement for signed
signals, IEEE bits for float signals) as a ``uint64`` matrix of shape
``(columns, rows)`` plus a boolean presence matrix of the same shape; the
column order is defined by the :class:`~minute_packet.schema.Schema` whose
fingerprint the packet carries, so names never travel in a packet.

Wire layout::

    b"MP" | version (1 byte) | flags (1 byte, 0) | zstd frame of a msgpack map

Version 2 differs from version 1 only in that the zstd frame must carry its
content checksum (XXH64), so corruption in transit or at rest is rejected
(``corrupt_compression``) instead of decoded into other values.

Inside, each column is stored as its first value plus zig-zag deltas; columns
are grouped by the byte width their deltas need (0 = constant) and each
group is byte-shuffled, which is what lets zstd squeeze slowly moving sensor
values. Decoding is bounded and strict: every problem raises
:class:`PacketDecodeError` with a machine-readable ``reason``; :func:`validate` checks
a packet completely without building its matrices, which :mod:`minute_packet.columns`
then fills.
"""
from __future__ import annotations

import array
import dataclasses
import threading
from typing import Any

import msgpack
import numpy as np
import zstandard

from .errors import PacketDecodeError, PacketEncodeError

MAGIC = b"MP"
VERSION = 2  # what encode writes
READ_VERSIONS = (1, 2)
MAX_SEQ = (1 << 63) - 1  # fits a signed 64-bit integer (SQLite, Parquet INT64)
END_OF_TIME = 253_402_300_800  # 10000-01-01T00:00:00Z: every row time must be before it
MAX_CORRECTION_MS = (1 << 31) - 1
MAX_ID_BYTES = 128  # vid and model, UTF-8
MAX_CLOCK_BYTES = 16
MAX_ROWS = 3600
MAX_COLUMNS = 65535
MAX_PACKET_BYTES = 1 << 20  # compressed
MAX_BODY_BYTES = 16 << 20  # decompressed
ZSTD_LEVEL = 3

_WIDTH_CODES = (0, 1, 2, 4, 8)
_ALL_MISSING = 255
_DTYPES = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
_WIDTH_BYTES = bytes([*_WIDTH_CODES, _ALL_MISSING])  # every valid width code, for bytes.translate
_WIDTH_CODE_BYTES = tuple((w, bytes([w])) for w in (1, 2, 4, 8))
_ALL_MISSING_BYTE = bytes([_ALL_MISSING])
_SIGNED = {1: np.int8, 2: np.int16, 4: np.int32, 8: np.int64}
_ONE, _ZERO = np.uint64(1), np.uint64(0)
_local = threading.local()  # one zstd decompressor per thread (a context is not thread-safe)


def _decompressor() -> zstandard.ZstdDecompressor:
    d = getattr(_local, "zstd", None)
    if d is None:
        d = _local.zstd = zstandard.ZstdDecompressor()
    return d


@dataclasses.dataclass(frozen=True, eq=False)
class PacketHeader:
    """What identifies a packet and places it in time: shared by :class:`MinutePacket` (decoded)
    and :class:`PacketInfo` (validated, columns still encoded)."""

    vehicle_id: str
    model: str
    boot_id: bytes
    seq: int
    start_time: int  # Unix seconds of the first row
    fingerprint: bytes  # of the schema that orders the columns

    @property
    def key(self) -> tuple[str, bytes, int]:
        """The identity the sink deduplicates on."""
        return (self.vehicle_id, self.boot_id, self.seq)


@dataclasses.dataclass(frozen=True, eq=False)
class MinutePacket(PacketHeader):
    """One vehicle's rows ``start_time .. start_time + rows - 1`` (Unix seconds).

    ``values[c, i]`` is the raw bit pattern of column ``c`` at second ``i`` and is
    meaningful only where ``present[c, i]`` is true.
    """

    values: np.ndarray
    present: np.ndarray
    clock: str = "frame"
    clock_synced: bool | None = None  # was the gateway's wall clock synchronised (None: unknown)
    clock_correction_ms: int = 0  # correction applied to frame times after a backward clock step

    @property
    def rows(self) -> int:
        return int(self.values.shape[1])

    @property
    def columns(self) -> int:
        return int(self.values.shape[0])

    def same_content(self, other: MinutePacket) -> bool:
        """True when both packets carry the same header and the same present values."""
        return (
            self.vehicle_id == other.vehicle_id
            and self.model == other.model
            and self.boot_id == other.boot_id
            and self.seq == other.seq
            and self.start_time == other.start_time
            and self.fingerprint == other.fingerprint
            and self.clock == other.clock
            and self.clock_synced == other.clock_synced
            and self.clock_correction_ms == other.clock_correction_ms
            and np.array_equal(self.present, other.present)
            and np.array_equal(np.where(self.present, self.values, 0), np.where(other.present, other.values, 0))
        )


def _zigzag(v: np.ndarray) -> np.ndarray:
    s = v.view(np.int64)
    return ((s << 1) ^ (s >> 63)).view(np.uint64)


def _unzigzag(z: np.ndarray) -> np.ndarray:
    return (z >> np.uint64(1)) ^ (np.uint64(0) - (z & np.uint64(1)))


def _check_header(packet: MinutePacket) -> None:
    if packet.values.shape != packet.present.shape or packet.values.ndim != 2:
        raise PacketEncodeError("values and present must be 2-D arrays of one shape")
    if not 1 <= packet.rows <= MAX_ROWS:
        raise PacketEncodeError(f"rows must be 1..{MAX_ROWS}, got {packet.rows}")
    if packet.columns > MAX_COLUMNS:
        raise PacketEncodeError(f"at most {MAX_COLUMNS} columns, got {packet.columns}")
    if not (0 <= packet.seq <= MAX_SEQ) or not (0 <= packet.start_time <= END_OF_TIME - packet.rows):
        raise PacketEncodeError("seq must be 0..2^63-1 and every row time before the year 10000")
    if not 1 <= len(packet.vehicle_id.encode()) <= MAX_ID_BYTES or not 1 <= len(packet.model.encode()) <= MAX_ID_BYTES:
        raise PacketEncodeError(f"vehicle id and model must be 1..{MAX_ID_BYTES} bytes of UTF-8")
    if abs(packet.clock_correction_ms) > MAX_CORRECTION_MS:
        raise PacketEncodeError("clock correction out of range")
    if len(packet.fingerprint) != 8 or len(packet.boot_id) != 16:
        raise PacketEncodeError("fingerprint must be 8 bytes and boot_id 16 bytes")


def encode(packet: MinutePacket, *, level: int = ZSTD_LEVEL) -> bytes:
    """Serialise a packet to its wire form."""
    _check_header(packet)
    values = np.ascontiguousarray(packet.values, dtype=np.uint64)
    present = np.ascontiguousarray(packet.present, dtype=bool)
    ncol, nrow = values.shape
    # Carry each column's value into its missing slots so they cost nothing.
    col_has = present.any(axis=1)
    first_idx = present.argmax(axis=1)
    idx = np.where(present, np.arange(nrow), first_idx[:, None])
    np.maximum.accumulate(idx, axis=1, out=idx)
    filled = np.take_along_axis(values, idx, axis=1)
    filled[~col_has] = 0
    zz = _zigzag(np.diff(filled, axis=1))  # uint64 wrap-around, so exact for any bits
    peak = zz.max(axis=1) if nrow > 1 else np.zeros(ncol, np.uint64)
    widths = np.select(
        [peak == 0, peak <= 0xFF, peak <= 0xFFFF, peak <= 0xFFFFFFFF], [0, 1, 2, 4], default=8
    ).astype(np.uint8)
    body: dict[str, Any] = {
        "vid": packet.vehicle_id,
        "model": packet.model,
        "boot": packet.boot_id,
        "seq": packet.seq,
        "t0": packet.start_time,
        "n": nrow,
        "fp": packet.fingerprint,
        "clk": packet.clock,
        "first": _zigzag(filled[:, 0].copy()).tolist(),
        "mask": b"" if present.all() else np.packbits(present, axis=None).tobytes(),
    }
    if packet.clock_synced is not None:
        body["sync"] = bool(packet.clock_synced)
    if packet.clock_correction_ms:
        body["corr"] = int(packet.clock_correction_ms)
    widths[~col_has] = _ALL_MISSING
    body["w"] = widths.tobytes()
    for w in (1, 2, 4, 8):
        sel = widths == w
        if sel.any():
            block = zz[sel].astype(_DTYPES[w])
            # byte-shuffle: all least significant bytes first, then the next, ...
            body[f"d{w}"] = block.reshape(-1).view(np.uint8).reshape(-1, w).T.tobytes()
    raw = msgpack.packb(body, use_bin_type=True)
    return MAGIC + bytes((VERSION, 0)) + zstandard.ZstdCompressor(level=level, write_checksum=True).compress(raw)


def _field(body: dict, key: str, kind: type | tuple[type, ...]) -> Any:
    try:
        value = body[key]
    except KeyError:
        raise PacketDecodeError("malformed", f"missing field {key!r}") from None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise PacketDecodeError("malformed", f"field {key!r} has type {type(value).__name__}")
    return value


@dataclasses.dataclass(frozen=True, eq=False)
class PacketInfo(PacketHeader):
    """A fully validated packet whose value matrices are not built yet (:func:`validate`).

    Everything :func:`decode` checks has been checked, so :func:`minute_packet.columns.materialize` cannot fail;
    it holds the header plus the still-encoded columns (a few KiB instead of the matrices)."""

    rows: int
    clock: str
    clock_synced: bool | None
    clock_correction_ms: int
    widths: np.ndarray  # uint8 width code per column
    first: np.ndarray  # uint64 first value per column (un-zig-zagged)
    mask: bytes  # packed presence bits, empty = all present
    deltas: dict[int, bytes]  # width -> byte-shuffled delta block, for widths that occur

    @property
    def columns(self) -> int:
        return len(self.widths)


def decode(data: bytes) -> MinutePacket:
    """Parse a packet's wire form, raising :class:`PacketDecodeError` on any defect."""
    from .columns import materialize  # columns builds on this module

    return materialize(validate(data))


def validate(data: bytes, *, reference: bool = False) -> PacketInfo:
    """Validate a packet's wire form exactly as :func:`decode` does, without building its matrices.

    The body is read by a typed msgpack decoder (:mod:`minute_packet.codec_typed`, msgspec) that
    checks every field's type in C; a body it refuses (a wrong type, an unknown or missing field,
    not msgpack at all) goes through the plain path, msgpack plus checks in Python, which gives the
    error. ``reference=True`` uses the plain path only (tests compare the two)."""
    if len(data) > MAX_PACKET_BYTES:
        raise PacketDecodeError("too_large", f"{len(data)} bytes exceeds {MAX_PACKET_BYTES}")
    if len(data) < 4 or data[:2] != MAGIC:
        raise PacketDecodeError("bad_magic", "not a minute packet")
    if data[2] not in READ_VERSIONS:
        raise PacketDecodeError("unsupported_version", f"format version {data[2]}, this codec reads {READ_VERSIONS}")
    frame = data[4:]
    try:
        params = zstandard.get_frame_parameters(frame)
    except zstandard.ZstdError as exc:
        raise PacketDecodeError("corrupt_compression", str(exc)) from None
    size = params.content_size
    if data[2] >= 2 and not params.has_checksum:
        raise PacketDecodeError("corrupt_compression", "a version 2 packet's zstd frame must carry its checksum")
    if size == zstandard.CONTENTSIZE_UNKNOWN:
        raise PacketDecodeError("corrupt_compression", "the zstd frame header must state the content size")
    if size > MAX_BODY_BYTES:
        raise PacketDecodeError("too_large", f"body of {size} bytes exceeds {MAX_BODY_BYTES}")
    try:
        raw = _decompressor().decompress(frame, max_output_size=MAX_BODY_BYTES)
    except zstandard.ZstdError as exc:
        raise PacketDecodeError("corrupt_compression", str(exc)) from None
    if not reference:
        from .codec_typed import check_typed  # builds on this module

        info = check_typed(raw)
        if info is not None:
            return info
    try:
        body = msgpack.unpackb(raw, raw=False, strict_map_key=True, max_array_len=MAX_COLUMNS)
    except Exception as exc:  # msgpack raises several unrelated types
        raise PacketDecodeError("malformed", f"bad msgpack body: {exc}") from None
    if not isinstance(body, dict):
        raise PacketDecodeError("malformed", "body is not a map")
    return _check_body(body)


def _check_body(body: dict) -> PacketInfo:
    nrow = _field(body, "n", int)
    if not 1 <= nrow <= MAX_ROWS:
        raise PacketDecodeError("malformed", f"row count {nrow} outside 1..{MAX_ROWS}")
    wire_widths = _field(body, "w", bytes)
    widths = np.frombuffer(wire_widths, dtype=np.uint8)
    ncol = len(widths)
    first = _field(body, "first", list)
    if len(first) != ncol or not set(map(type, first)) <= {int}:
        raise PacketDecodeError("malformed", "first values do not match the column count")
    try:  # array.array refuses negative and too large ints, like numpy's uint64 and 3x faster
        first_zz = np.frombuffer(array.array("Q", first), dtype=np.uint64) if ncol else np.zeros(0, np.uint64)
    except OverflowError:
        raise PacketDecodeError("malformed", "first values do not match the column count") from None
    if wire_widths.translate(None, _WIDTH_BYTES):  # anything left is not a width code
        raise PacketDecodeError("malformed", "unknown column width code")
    mask = _field(body, "mask", bytes)
    if mask and len(mask) != (ncol * nrow + 7) // 8:
        raise PacketDecodeError("malformed", "presence mask has the wrong length")
    if _ALL_MISSING_BYTE in wire_widths and _unpack(mask, ncol, nrow)[widths == _ALL_MISSING].any():
        raise PacketDecodeError("malformed", "an all-missing column has present values")
    deltas = {}
    for w, code in _WIDTH_CODE_BYTES:
        k = wire_widths.count(code)
        blob = body.get(f"d{w}", b"")
        if not isinstance(blob, bytes) or len(blob) != k * (nrow - 1) * w:
            raise PacketDecodeError("malformed", f"delta block d{w} has the wrong length")
        if k and nrow > 1:
            deltas[w] = blob
    boot = _field(body, "boot", bytes)
    fp = _field(body, "fp", bytes)
    if len(boot) != 16 or len(fp) != 8:
        raise PacketDecodeError("malformed", "boot id must be 16 bytes and fingerprint 8 bytes")
    seq = _field(body, "seq", int)
    t0 = _field(body, "t0", int)
    if not 0 <= seq <= MAX_SEQ:
        raise PacketDecodeError("malformed", f"seq {seq} outside 0..2^63-1")
    if not 0 <= t0 <= END_OF_TIME - nrow:
        raise PacketDecodeError("malformed", f"start time {t0} outside 0..(10000-01-01T00:00:00Z - n)")
    synced = body.get("sync")
    correction = body.get("corr", 0)
    if (not (synced is None or isinstance(synced, bool)) or type(correction) is not int
            or abs(correction) > MAX_CORRECTION_MS):
        raise PacketDecodeError("malformed", "bad clock fields")
    vid, model, clock = _field(body, "vid", str), _field(body, "model", str), _field(body, "clk", str)
    if not 1 <= len(vid.encode()) <= MAX_ID_BYTES or not 1 <= len(model.encode()) <= MAX_ID_BYTES:
        raise PacketDecodeError("malformed", f"vid and model must be 1..{MAX_ID_BYTES} bytes of UTF-8")
    if len(clock.encode()) > MAX_CLOCK_BYTES:
        raise PacketDecodeError("malformed", f"clk is longer than {MAX_CLOCK_BYTES} bytes")
    return PacketInfo(
        vehicle_id=vid,
        model=model,
        boot_id=boot,
        seq=seq,
        start_time=t0,
        fingerprint=fp,
        rows=nrow,
        clock=clock,
        clock_synced=synced,
        clock_correction_ms=correction,
        widths=widths,
        first=(first_zz >> _ONE) ^ (_ZERO - (first_zz & _ONE)),
        mask=mask,
        deltas=deltas,
    )


def _unpack(mask: bytes, ncol: int, nrow: int) -> np.ndarray:
    if not mask:
        return np.ones((ncol, nrow), dtype=bool)
    return np.unpackbits(np.frombuffer(mask, np.uint8), count=ncol * nrow).reshape(ncol, nrow).view(bool)
