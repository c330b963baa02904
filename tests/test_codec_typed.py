"""The typed fast path of ``validate`` (msgspec) against the plain reference path (msgpack plus
Python checks): the same packet, or the same error (reason and detail), for the conformance
vectors, bodies of random field values and types (the fuzzer's), and mutated real packets."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dcm.fuzz import _mutated, _packet_bodies, _reference
from minute_packet import PacketDecodeError
from minute_packet.codec import PacketInfo, validate

CONFORMANCE = Path(__file__).resolve().parent.parent / "docs" / "conformance"


def _outcome(data: bytes, reference: bool):
    try:
        info = validate(data, reference=reference)
    except PacketDecodeError as exc:
        return ("error", exc.reason, exc.detail)
    assert isinstance(info, PacketInfo)
    return ("packet", info.vehicle_id, info.model, info.boot_id, info.seq, info.start_time, info.fingerprint,
            info.rows, info.clock, info.clock_synced, info.clock_correction_ms, info.widths.tobytes(),
            info.first.tobytes(), info.mask, tuple(sorted(info.deltas.items())), info.first.dtype, info.widths.dtype)


def _same(data: bytes) -> None:
    assert _outcome(data, reference=False) == _outcome(data, reference=True)


@pytest.mark.parametrize("path", sorted(CONFORMANCE.rglob("*.bin")), ids=lambda p: p.name)
def test_the_conformance_vectors_give_the_same_answer_both_ways(path):
    _same(path.read_bytes())


def test_a_good_packet_takes_the_fast_path_and_errors_the_plain_one():
    from minute_packet.codec_typed import check_typed
    import zstandard

    good = _reference()["packet"]
    raw = zstandard.ZstdDecompressor().decompress(good[4:])
    assert check_typed(raw) is not None  # the usual case really is fast
    assert np.array_equal(validate(good).first, validate(good, reference=True).first)


_SETTINGS = settings(max_examples=400, deadline=None, database=None, suppress_health_check=list(HealthCheck))


@_SETTINGS
@given(_packet_bodies())
def test_random_bodies_give_the_same_answer_both_ways(data):
    _same(data)


@_SETTINGS
@given(st.deferred(lambda: _mutated(_reference()["packet"])))
def test_mutated_packets_give_the_same_answer_both_ways(data):
    _same(data)
