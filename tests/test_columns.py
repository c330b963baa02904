"""The sink's chunk decoder (``fill_many``, many packets side by side) against the per-packet
reference (``fill``, also what ``decode`` uses): the same raw values and presence, for every
delta width (constant, 1, 2, 4, 8 bytes, wrapping 64-bit patterns), all-missing columns,
masks and a column permutation."""
from __future__ import annotations

import numpy as np
import pytest

from minute_packet import MinutePacket, decode, encode
from minute_packet.codec import validate
from minute_packet.columns import fill, fill_many

T0 = 1_767_225_600


def _packet(rng, ncol: int, nrow: int, seq: int) -> MinutePacket:
    kinds = rng.integers(0, 7, ncol)  # per column: how its values move
    values = np.empty((ncol, nrow), dtype=np.uint64)
    for c, kind in enumerate(kinds):
        start = int(rng.integers(0, 1 << 62))
        if kind == 0:  # constant
            values[c] = start
        elif kind in (1, 2, 3, 4):  # deltas that need 1, 2, 4, 8 bytes
            span = (100, 30_000, 2_000_000_000, 1 << 62)[kind - 1]
            steps = rng.integers(-span, span, nrow, dtype=np.int64)
            values[c] = (np.uint64(start) + np.cumsum(steps).view(np.uint64))
        elif kind == 5:  # any 64-bit pattern (IEEE doubles, wrap-around)
            values[c] = rng.integers(0, np.iinfo(np.int64).max, nrow, dtype=np.int64).view(np.uint64) << np.uint64(1)
        else:
            values[c] = rng.integers(0, 3, nrow)
    present = rng.random((ncol, nrow)) < 0.85
    present[rng.integers(0, ncol)] = False  # an all-missing column
    present[rng.integers(0, ncol)] = True
    return MinutePacket(vehicle_id=f"V{seq % 3}", model="m", boot_id=bytes(16), seq=seq, start_time=T0 + 60 * seq,
                        fingerprint=bytes(8), values=values, present=present)


@pytest.mark.parametrize("seed", range(6))
def test_the_chunk_decoder_gives_the_per_packet_reference_values(seed):
    rng = np.random.default_rng(seed)
    ncol, nrow, count = 24, 60, 9
    packets = [_packet(rng, ncol, nrow, s) for s in range(count)]
    if seed == 0:  # a packet with every value present: empty mask on the wire
        packets[0] = MinutePacket(**{**packets[0].__dict__, "present": np.ones((ncol, nrow), bool)})
    infos = [validate(encode(p)) for p in packets]
    assert {int(w) for i in infos for w in i.widths} >= {0, 1, 2, 4, 8, 255}
    rows = rng.permutation(ncol)
    got = fill_many(infos, rows, chunk=4)  # chunks of 4, 4 and 1
    assert got is not None
    values, present = got
    for i, (p, info) in enumerate(zip(packets, infos)):
        want_v = np.empty((ncol, nrow), np.uint64)
        want_p = np.empty((ncol, nrow), bool)
        fill(info, want_v, want_p, rows)
        cols = slice(i * nrow, (i + 1) * nrow)
        np.testing.assert_array_equal(present[:, cols], want_p)
        np.testing.assert_array_equal(np.where(want_p, values[:, cols], 0), np.where(want_p, want_v, 0))
        # and both are the packet that was encoded (decode uses fill)
        assert decode(encode(p)).same_content(p)
        np.testing.assert_array_equal(want_p[rows], p.present)
        np.testing.assert_array_equal(np.where(p.present, want_v[rows], 0), np.where(p.present, p.values, 0))


def test_packets_the_chunk_decoder_cannot_take_are_left_to_the_reference():
    rng = np.random.default_rng(1)
    a, b = _packet(rng, 8, 60, 0), _packet(rng, 8, 30, 1)
    assert fill_many([validate(encode(a)), validate(encode(b))], np.arange(8)) is None
