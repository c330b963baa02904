"""Unit tests of the packet codec: round trips, golden vectors, strict bounded decoding."""
from __future__ import annotations

import json
import os
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zstandard

from minute_packet import MinutePacket, PacketDecodeError, PacketEncodeError, decode, encode
from minute_packet import codec, columns

GOLDEN = Path(__file__).parent / "data" / "golden"


def _packet(values: np.ndarray, present: np.ndarray, **kw) -> MinutePacket:
    base = dict(vehicle_id="VIN0001", model="m", boot_id=bytes(range(16)), seq=7, start_time=1_764_000_000,
                fingerprint=b"\x01\x02\x03\x04\x05\x06\x07\x08")
    base.update(kw)
    return MinutePacket(values=values, present=present, **base)


def test_round_trip_of_every_width_sign_and_missing_pattern():
    rng = np.random.default_rng(3)
    n = 60
    cols = [
        np.full(n, 5, np.uint64),  # constant
        np.cumsum(rng.integers(-100, 100, n)).astype(np.int64).view(np.uint64),  # signed, 1-byte deltas
        rng.integers(0, 60_000, n, dtype=np.uint64),  # 2-byte deltas
        rng.integers(0, 2**32, n, dtype=np.uint64),  # 4-byte deltas
        rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True),  # any 64-bit pattern
        np.array([-1] * n, dtype=np.int64).view(np.uint64),  # negative constant
        np.zeros(n, np.uint64),  # all missing
    ]
    values = np.stack(cols)
    present = rng.random(values.shape) > 0.3
    present[0] = True
    present[6] = False
    p = _packet(values, present)
    q = decode(encode(p))
    assert q.same_content(p)
    assert np.array_equal(q.values[present], values[present])


def test_many_inspected_packets_decode_side_by_side_as_each_alone():
    """``fill_many`` (the sink's chunk decoder) gives the same values and presence as ``fill`` per
    packet, for packets whose columns change width from packet to packet, with a row permutation."""
    rng = np.random.default_rng(11)
    ncol, n = 16, 60  # 16 x 60 bits: presence masks end on a byte boundary
    infos, expected = [], []
    for k in range(9):
        scale = rng.choice([0, 1, 200, 60_000, 2**33, 2**63], size=ncol)  # width per column varies per packet
        values = (rng.integers(0, 2**63, (ncol, 1), dtype=np.uint64)
                  + np.cumsum(rng.integers(0, 2, (ncol, n)) * scale[:, None].astype(np.uint64), axis=1,
                              dtype=np.uint64))
        values[3] = np.array(rng.integers(-(2**40), 2**40, n), dtype=np.int64).view(np.uint64)  # signed
        present = rng.random((ncol, n)) > (0.0 if k % 3 == 0 else 0.25)
        present[5] = k % 2 == 0  # all missing in every other packet
        p = _packet(values, present, seq=k)
        infos.append(codec.validate(encode(p)))
        expected.append(p)
    rows = rng.permutation(ncol)
    values, present = columns.fill_many(infos, rows)
    for k, (info, p) in enumerate(zip(infos, expected)):
        one_v = np.empty((ncol, n), np.uint64)
        one_p = np.empty((ncol, n), bool)
        columns.fill(info, one_v, one_p, rows)
        block = slice(k * n, (k + 1) * n)
        assert np.array_equal(present[:, block], one_p)
        assert np.array_equal(np.where(one_p, values[:, block], 0), np.where(one_p, one_v, 0))
        assert np.array_equal(values[rows][:, block][p.present], p.values[p.present])
    assert columns.fill_many(infos[:1] + [codec.validate(encode(_packet(np.zeros((ncol, 7), np.uint64),
                                                                      np.ones((ncol, 7), bool))))], rows) is None


def test_single_row_and_all_present_packets():
    p = _packet(np.array([[1], [2]], np.uint64), np.ones((2, 1), bool))
    assert decode(encode(p)).same_content(p)


@pytest.mark.parametrize("bad", [
    dict(values=np.zeros((2, 0), np.uint64), present=np.zeros((2, 0), bool)),
    dict(values=np.zeros((2, 3601), np.uint64), present=np.zeros((2, 3601), bool)),
    dict(fingerprint=b"short"),
    dict(seq=-1),
])
def test_invalid_packets_are_refused_by_the_encoder(bad):
    base = dict(values=np.zeros((2, 3), np.uint64), present=np.ones((2, 3), bool))
    base.update(bad)
    with pytest.raises(PacketEncodeError):
        encode(_packet(**base))


def _wire(body: dict, version: int = codec.VERSION) -> bytes:
    raw = msgpack.packb(body, use_bin_type=True)
    return codec.MAGIC + bytes((version, 0)) + zstandard.ZstdCompressor(write_checksum=version >= 2).compress(raw)


def _good_body() -> dict:
    p = _packet(np.arange(6, dtype=np.uint64).reshape(2, 3), np.ones((2, 3), bool))
    return msgpack.unpackb(zstandard.ZstdDecompressor().decompress(encode(p)[4:]), raw=False)


@pytest.mark.parametrize("data,reason", [
    (b"", "bad_magic"),
    (b"garbage garbage", "bad_magic"),
    (codec.MAGIC + bytes((99, 0)) + b"x", "unsupported_version"),
    (codec.MAGIC + bytes((1, 0)) + b"not zstd at all", "corrupt_compression"),
    (b"MP" + bytes((1, 0)) + os.urandom(codec.MAX_PACKET_BYTES), "too_large"),
    (codec.MAGIC + bytes((1, 0)) + zstandard.ZstdCompressor().compress(b"\x00" * (codec.MAX_BODY_BYTES + 1)), "too_large"),
    (codec.MAGIC + bytes((1, 0)) + zstandard.ZstdCompressor().compress(b"\xc1"), "malformed"),
    (_wire([1, 2, 3]), "malformed"),
    (codec.MAGIC + bytes((2, 0)) + zstandard.ZstdCompressor(write_checksum=False).compress(b"\x80"),
     "corrupt_compression"),  # version 2 requires the frame checksum
    (codec.MAGIC + bytes((2, 0)) + zstandard.ZstdCompressor(write_content_size=False).compress(b"\x80"),
     "corrupt_compression"),  # the content size must be stated
])
def test_bad_bytes_raise_typed_errors(data, reason):
    with pytest.raises(PacketDecodeError) as err:
        decode(data)
    assert err.value.reason == reason


@pytest.mark.parametrize("mutate", [
    lambda b: b.pop("vid"),
    lambda b: b.update(n=0),
    lambda b: b.update(n=True),
    lambda b: b.update(w=b"\x07\x00"),
    lambda b: b.update(d1=b"\x00"),
    lambda b: b.update(first=[1]),
    lambda b: b.update(mask=b"\x00\x00"),
    lambda b: b.update(boot=b"short"),
    lambda b: b.update(seq=-5),
])
def test_malformed_structure_is_rejected(mutate):
    body = _good_body()
    mutate(body)
    with pytest.raises(PacketDecodeError) as err:
        decode(_wire(body))
    assert err.value.reason == "malformed"


def test_truncated_packets_are_rejected():
    data = encode(_packet(np.arange(120, dtype=np.uint64).reshape(2, 60) ** 3, np.ones((2, 60), bool)))
    for cut in (3, 5, len(data) // 2, len(data) - 1):
        with pytest.raises(PacketDecodeError):
            decode(data[:cut])


def _golden_cases():
    return sorted(GOLDEN.glob("*.bin"))


@pytest.mark.parametrize("path", _golden_cases(), ids=lambda p: p.stem)
def test_golden_vectors_decode_to_their_documented_content(path):
    expected = json.loads(path.with_suffix(".json").read_text())
    p = decode(path.read_bytes())
    assert p.vehicle_id == expected["vehicle_id"]
    assert p.model == expected["model"]
    assert p.boot_id.hex() == expected["boot_id"]
    assert p.seq == expected["seq"]
    assert p.start_time == expected["start_time"]
    assert p.fingerprint.hex() == expected["fingerprint"]
    assert p.clock == expected["clock"]
    got = [[int(v) if ok else None for v, ok in zip(vals, pres)] for vals, pres in zip(p.values, p.present)]
    assert got == expected["columns"]
    assert decode(encode(p)).same_content(p)


def test_there_are_golden_vectors():
    assert len(_golden_cases()) >= 2


def test_a_flipped_bit_anywhere_in_a_version_2_packet_is_rejected():
    """The frame checksum (version 2): no single-bit corruption decodes into other values (a few
    bits of a zstd frame are not read at all: flipping them leaves the content as it was)."""
    rng = np.random.default_rng(5)
    values = rng.integers(0, 1000, (8, 60), dtype=np.uint64)
    packet = _packet(values, np.ones(values.shape, bool))
    wire = encode(packet)
    assert wire[2] == 2
    rejected = 0
    for i in range(4, len(wire)):
        for bit in (0, 5):
            bad = bytearray(wire)
            bad[i] ^= 1 << bit
            try:
                assert decode(bytes(bad)).same_content(packet)
            except PacketDecodeError:
                rejected += 1
    assert rejected >= 2 * (len(wire) - 4) - 8


@pytest.mark.parametrize("field,value", [
    ("seq", 2**63), ("t0", codec.END_OF_TIME - 2), ("vid", "v" * 129), ("vid", ""), ("model", ""),
    ("model", "m" * 129), ("corr", 2**31), ("clk", "c" * 17),
])
def test_header_values_outside_what_storage_holds_are_malformed(field, value):
    body = _good_body()  # 3 rows
    body[field] = value
    with pytest.raises(PacketDecodeError) as err:
        decode(_wire(body))
    assert err.value.reason == "malformed"


def test_the_last_representable_header_values_decode():
    body = _good_body()
    body.update(seq=2**63 - 1, t0=codec.END_OF_TIME - 3, vid="v" * 128, corr=-(2**31 - 1))
    p = decode(_wire(body))
    assert (p.seq, p.start_time + p.rows) == (2**63 - 1, codec.END_OF_TIME)
