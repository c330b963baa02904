"""The fast path of :func:`minute_packet.codec.validate`: the msgpack body decoded by msgspec into a
typed struct (every field's type checked in C, unknown fields refused), then the value checks of
:func:`minute_packet.codec._check_body` in the same order with the same messages.

It only ever accepts what the plain path accepts: anything msgspec refuses returns None and the
plain path (msgpack plus Python type checks) decides and names the error. ``tests/test_codec_typed.py``
runs both paths over the conformance vectors, the fuzz corpus and mutated packets.
"""
from __future__ import annotations

import array

import msgspec
import numpy as np

from .codec import (_ALL_MISSING, _ALL_MISSING_BYTE, _ONE, _WIDTH_BYTES, _WIDTH_CODE_BYTES, _ZERO, END_OF_TIME,
                    MAX_CLOCK_BYTES, MAX_COLUMNS, MAX_CORRECTION_MS, MAX_ID_BYTES, MAX_ROWS, MAX_SEQ, PacketInfo,
                    _unpack)
from .errors import PacketDecodeError


class _Body(msgspec.Struct, forbid_unknown_fields=True):
    vid: str
    model: str
    boot: bytes
    seq: int
    t0: int
    n: int
    fp: bytes
    clk: str
    first: list[int]
    mask: bytes
    w: bytes
    sync: bool | None = None
    corr: int = 0
    d1: bytes = b""
    d2: bytes = b""
    d4: bytes = b""
    d8: bytes = b""


_DECODER = msgspec.msgpack.Decoder(_Body)


def check_typed(raw: bytes) -> PacketInfo | None:
    """The validated packet of a decompressed body, None when msgspec refuses it (then the plain
    path decides), or :class:`PacketDecodeError` exactly as the plain path raises it."""
    try:
        body = _DECODER.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    first = body.first
    if len(first) > MAX_COLUMNS:  # the plain path's msgpack refuses such an array
        return None
    nrow = body.n
    if not 1 <= nrow <= MAX_ROWS:
        raise PacketDecodeError("malformed", f"row count {nrow} outside 1..{MAX_ROWS}")
    wire_widths = body.w
    widths = np.frombuffer(wire_widths, dtype=np.uint8)
    ncol = len(widths)
    if len(first) != ncol:
        raise PacketDecodeError("malformed", "first values do not match the column count")
    try:
        first_zz = np.frombuffer(array.array("Q", first), dtype=np.uint64) if ncol else np.zeros(0, np.uint64)
    except OverflowError:
        raise PacketDecodeError("malformed", "first values do not match the column count") from None
    if wire_widths.translate(None, _WIDTH_BYTES):
        raise PacketDecodeError("malformed", "unknown column width code")
    mask = body.mask
    if mask and len(mask) != (ncol * nrow + 7) // 8:
        raise PacketDecodeError("malformed", "presence mask has the wrong length")
    if _ALL_MISSING_BYTE in wire_widths and _unpack(mask, ncol, nrow)[widths == _ALL_MISSING].any():
        raise PacketDecodeError("malformed", "an all-missing column has present values")
    deltas = {}
    blobs = {1: body.d1, 2: body.d2, 4: body.d4, 8: body.d8}
    for w, code in _WIDTH_CODE_BYTES:
        k = wire_widths.count(code)
        blob = blobs[w]
        if len(blob) != k * (nrow - 1) * w:
            raise PacketDecodeError("malformed", f"delta block d{w} has the wrong length")
        if k and nrow > 1:
            deltas[w] = blob
    boot, fp = body.boot, body.fp
    if len(boot) != 16 or len(fp) != 8:
        raise PacketDecodeError("malformed", "boot id must be 16 bytes and fingerprint 8 bytes")
    seq, t0 = body.seq, body.t0
    if not 0 <= seq <= MAX_SEQ:
        raise PacketDecodeError("malformed", f"seq {seq} outside 0..2^63-1")
    if not 0 <= t0 <= END_OF_TIME - nrow:
        raise PacketDecodeError("malformed", f"start time {t0} outside 0..(10000-01-01T00:00:00Z - n)")
    if abs(body.corr) > MAX_CORRECTION_MS:
        raise PacketDecodeError("malformed", "bad clock fields")
    vid, model, clock = body.vid, body.model, body.clk
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
        clock_synced=body.sync,
        clock_correction_ms=body.corr,
        widths=widths,
        first=(first_zz >> _ONE) ^ (_ZERO - (first_zz & _ONE)),
        mask=mask,
        deltas=deltas,
    )
