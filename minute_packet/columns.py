"""Validated packets into value matrices: one packet (:func:`materialize`, :func:`fill`) or many
side by side in one column layout (:func:`fill_many`, the sink's chunk decoder).

The inverse of the column encoding in :mod:`minute_packet.codec`: first value plus zig-zag
deltas grouped by byte width and byte-shuffled. Input is a :class:`~minute_packet.codec.PacketInfo`
that :func:`~minute_packet.codec.validate` has checked completely, so nothing here can fail.
"""
from __future__ import annotations

import numpy as np

from .codec import MinutePacket, PacketInfo

_DTYPES = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
_SIGNED = {1: np.int8, 2: np.int16, 4: np.int32, 8: np.int64}


def materialize(info: PacketInfo) -> MinutePacket:
    """The :class:`MinutePacket` of a validated packet."""
    ncol, nrow = info.columns, info.rows
    values = np.empty((ncol, nrow), dtype=np.uint64)
    present = np.empty((ncol, nrow), dtype=bool)
    fill(info, values, present)
    return MinutePacket(
        vehicle_id=info.vehicle_id,
        model=info.model,
        boot_id=info.boot_id,
        seq=info.seq,
        start_time=info.start_time,
        fingerprint=info.fingerprint,
        values=values,
        present=present,
        clock=info.clock,
        clock_synced=info.clock_synced,
        clock_correction_ms=info.clock_correction_ms,
    )


def fill(info: PacketInfo, values: np.ndarray, present: np.ndarray, rows: np.ndarray | None = None) -> None:
    """Write a validated packet's raw values and presence into ``values`` (uint64) and
    ``present`` (bool), each of shape (columns, rows); they may be views into larger matrices
    (the sink decodes many packets side by side into one column layout this way). With ``rows``,
    column ``c`` goes to row ``rows[c]`` (a permutation) instead of row ``c``."""
    widths, first, nrow = info.widths, info.first, info.rows
    everything = slice(None) if rows is None else rows
    if info.mask:
        present[everything] = np.unpackbits(np.frombuffer(info.mask, np.uint8),
                                            count=widths.size * nrow).reshape(widths.size, nrow).view(bool)
    else:
        present[:] = True
    if not info.deltas:
        values[everything] = first[:, None]
        return
    # Constant (and all-missing) columns are their first value. The others are their first value
    # plus the running sum of their deltas, un-zig-zagged in their own width and sign-extended to
    # 64 bits (int64 sums wrap exactly like the encoder's uint64 differences); only those rows
    # are summed.
    # columns by width code (stable): constants, then widths 1, 2, 4, 8 in column order, then
    # all-missing ones; the varying columns are one slice of it, in delta-block order
    by_width = np.argsort(widths, kind="stable")
    counts = [len(blob) // ((nrow - 1) * w) for w, blob in info.deltas.items()]
    lo = int(np.count_nonzero(widths == 0))
    hi = lo + sum(counts)
    idx = by_width[lo:hi]
    if hi - lo < len(widths):
        still = np.concatenate((by_width[:lo], by_width[hi:]))
        values[still if rows is None else rows[still]] = first[still, None]
    moving = np.empty((hi - lo, nrow), dtype=np.int64)
    moving[:, 0] = first[idx].view(np.int64)
    row = 0
    for (w, blob), k in zip(info.deltas.items(), counts):
        planes = np.frombuffer(blob, np.uint8)
        if w == 1:
            z = planes
        elif w == 2:  # undo the byte shuffle: low bytes first, then high bytes
            planes = planes.reshape(2, -1)
            z = planes[0] | (planes[1].astype(np.uint16) << np.uint16(8))
        else:
            z = planes.reshape(w, -1).T.copy().view(_DTYPES[w]).reshape(-1)
        d = (z >> 1) ^ (-(z & 1))  # un-zig-zag within w bytes: the delta's two's complement
        moving[row:row + k, 1:] = d.view(_SIGNED[w]).reshape(k, nrow - 1)
        row += k
    np.cumsum(moving, axis=1, out=moving)
    values[idx if rows is None else rows[idx]] = moving.view(np.uint64)


def fill_many(infos: list[PacketInfo], rows: np.ndarray, *,
              chunk: int = 16) -> tuple[np.ndarray, np.ndarray] | None:
    """Decode many validated packets of one column count and one row count ``n`` side by side:
    returns ``values`` (uint64) and ``present`` (bool) of shape (columns, packets * n), packet i
    in columns ``i*n .. i*n+n-1`` and schema column ``c`` in row ``rows[c]``. The same result as
    :func:`fill` per packet, with a fixed number of array operations per ``chunk`` packets
    (small, so the work arrays stay in the CPU cache) written straight into the result. None
    when the packets do not qualify (mixed row counts or column counts, a packet of one row, or
    presence masks not ending on a byte boundary)."""
    nrow, ncol, count = infos[0].rows, infos[0].columns, len(infos)
    if nrow < 2 or (ncol * nrow) % 8 or any(p.rows != nrow or p.columns != ncol for p in infos):
        return None
    values = np.empty((ncol, count * nrow), dtype=np.uint64)
    present = np.empty((ncol, count * nrow), dtype=bool)
    source = np.empty(ncol, dtype=np.int64)  # row r holds schema column source[r]
    source[rows] = np.arange(ncol)
    lines = values.view(np.int64).reshape(ncol * count, nrow)  # line r * count + i: row r of packet i
    for a in range(0, count, chunk):
        part = infos[a:a + chunk]
        v = values[:, a * nrow:(a + len(part)) * nrow].view(np.int64)
        p = present[:, a * nrow:(a + len(part)) * nrow]
        v.shape = p.shape = (ncol, len(part), nrow)  # views (raises rather than copy)
        _fill_chunk(part, rows, source, v, p, lines, rows * count + a)
    return values, present


def _fill_chunk(infos: list[PacketInfo], rows: np.ndarray, source: np.ndarray, out: np.ndarray,
                present: np.ndarray, lines: np.ndarray, line_of: np.ndarray) -> None:
    """:func:`fill_many` for one chunk, into ``out`` (int64) and ``present`` of shape
    (columns, packets, n); ``lines`` is the whole value matrix as one line of n values per
    (row, packet), where schema column c of the chunk's packet i is line ``line_of[c] + i``
    (one index per line: numpy's fast path, not a two-index scatter)."""
    nrow, ncol, count = infos[0].rows, infos[0].columns, len(infos)
    full = b"\xff" * (ncol * nrow // 8)
    bits = np.unpackbits(np.frombuffer(b"".join([p.mask or full for p in infos]), np.uint8))
    # a gather then one transposing copy (a scatter from the transposed view is ~6x slower)
    present[:] = np.take(bits.view(bool).reshape(count, ncol, nrow), source, axis=1).transpose(1, 0, 2)
    first = np.stack([p.first for p in infos]).view(np.int64)  # (packets, columns)
    widths = np.stack([p.widths for p in infos])  # (packets, columns)
    out[...] = first.T[source][:, :, None]  # every column its first value: right for constant and missing ones
    for w in (1, 2, 4, 8):
        blobs = [p.deltas[w] for p in infos if w in p.deltas]
        if not blobs:
            continue
        if w == 1:
            z = np.frombuffer(b"".join(blobs), np.uint8)
        else:  # un-shuffle: byte plane j of every packet's block, joined, is byte j of the deltas
            z = np.zeros(sum(len(b) for b in blobs) // w, dtype=_DTYPES[w])
            for j in range(w):
                plane = b"".join([b[j * (len(b) // w):(j + 1) * (len(b) // w)] for b in blobs])
                z |= np.frombuffer(plane, np.uint8).astype(_DTYPES[w]) << _DTYPES[w](8 * j)
        d = ((z >> 1) ^ (-(z & 1))).view(_SIGNED[w]).reshape(-1, nrow - 1)  # un-zig-zag within w bytes
        packet, column = np.nonzero(widths == w)  # packet-major, column order: the blocks' order
        # running sums with time as the outer axis: one vector add per second over every moving
        # column of the chunk (numpy's cumsum along a short inner axis is ~10x slower)
        sums = np.empty((nrow, len(packet)), dtype=np.int64)
        sums[0] = first[packet, column]
        sums[1:] = d.T
        for r in range(1, nrow):
            np.add(sums[r], sums[r - 1], out=sums[r])  # int64 sums wrap like the encoder's differences
        lines[line_of[column] + packet] = sums.T
