"""Unit tests of the gateway's pure core: decoder and sampler on the reference DBC."""
from __future__ import annotations

import pytest

import dbc
from gateway.decoder import EXTENDED_FLAG, FrameDecoder, frame_key
from gateway.sampler import Sampler
from minute_packet import Collection, decode, encode, schema_from_dbc

T0 = 1_767_225_600  # a minute boundary


@pytest.fixture(scope="module")
def db():
    return dbc.load(dbc.REFERENCE_DBC)


def _sampler(db, collection=None):
    schema = schema_from_dbc(db, collection)
    return Sampler(db, schema, vehicle_id="V1", model="ref", boot_id=b"b" * 16), schema


def _frame(db, name, **values):
    m = db.get_message_by_name(name)
    full = {s.name: 0 for s in m.signals}
    full.update(values)
    return frame_key(m.frame_id, m.is_extended_frame), m.encode(full, scaling=True, strict=False)


def _col(schema, name):
    return [c.name for c in schema.columns].index(name)


def _value(packet, schema, name, row):
    i = _col(schema, name)
    if not packet.present[i, row]:
        return None
    return schema.columns[i].physical(packet.values[i, row : row + 1])[0]


def test_last_value_per_second_with_explicit_missing_seconds(db):
    s, schema = _sampler(db)
    out = []
    for t, speed in [(0.1, 10), (0.9, 12.5), (1.5, 20), (3.2, 30)]:  # second 2 has no frame
        out += s.add(T0 + t, *_frame(db, "VEHICLE_SPEED", VehicleSpeed=speed))
    out += s.flush()
    assert len(out) == 1
    p = out[0]
    assert (p.start_time, p.rows, p.seq) == (T0, 4, 0)
    assert [_value(p, schema, "VehicleSpeed", r) for r in range(4)] == [12.5, 20, None, 30]
    assert _value(p, schema, "EngineSpeed", 0) is None  # never seen: missing, not zero


def test_packets_never_cross_a_minute_and_carry_increasing_seq(db):
    s, schema = _sampler(db)
    out = []
    for t in range(0, 150):
        out += s.add(T0 + 30 + t + 0.5, *_frame(db, "ENGINE_DATA", EngineSpeed=800 + t))
    out += s.flush()
    assert [(p.start_time, p.rows) for p in out] == [(T0 + 30, 30), (T0 + 60, 60), (T0 + 120, 60)]
    assert [p.seq for p in out] == [0, 1, 2]
    assert _value(out[1], schema, "EngineSpeed", 0) == 800 + 30
    assert {p.fingerprint for p in out} == {schema.fingerprint}
    for p in out:  # what the sampler makes, the codec carries losslessly
        assert decode(encode(p)).same_content(p)


def test_min_max_mean_see_every_frame(db):
    coll = Collection(aggregates={"VehicleSpeed": ("last", "min", "max", "mean")})
    s, schema = _sampler(db, coll)
    for t, v in [(0.0, 10), (0.25, 40), (0.5, 4), (0.75, 30)]:
        s.add(T0 + t, *_frame(db, "VEHICLE_SPEED", VehicleSpeed=v))
    (p,) = s.flush()
    assert _value(p, schema, "VehicleSpeed", 0) == 30
    assert _value(p, schema, "VehicleSpeed__min", 0) == 4
    assert _value(p, schema, "VehicleSpeed__max", 0) == 40
    assert _value(p, schema, "VehicleSpeed__mean", 0) == pytest.approx(21)


def test_signed_big_endian_and_extended_frames(db):
    s, schema = _sampler(db)
    s.add(T0 + 0.1, *_frame(db, "STEERING_ANGLE", SteeringAngle=-123.4))
    s.add(T0 + 0.2, *_frame(db, "GNSS_POSITION", Latitude=-33.8688197, Longitude=151.2092955))
    (p,) = s.flush()
    assert _value(p, schema, "SteeringAngle", 0) == pytest.approx(-123.4)
    assert _value(p, schema, "Latitude", 0) == pytest.approx(-33.8688197)
    assert frame_key(0x18F00100, True) in s.decoder.plans


def test_multiplexed_message_keeps_each_branch(db):
    s, schema = _sampler(db)
    m = db.get_message_by_name("TPMS")
    mux = next(sig for sig in m.signals if sig.is_multiplexer)
    branches = sorted({i for sig in m.signals for i in (sig.multiplexer_ids or ())})
    assert len(branches) >= 2
    key = frame_key(m.frame_id, m.is_extended_frame)
    for i, b in enumerate(branches):
        values = {sig.name: (sig.minimum or 0) for sig in m.signals if not sig.multiplexer_ids or b in sig.multiplexer_ids}
        values[mux.name] = b
        s.add(T0 + 0.1 * (i + 1), key, m.encode(values, scaling=True, strict=False))
    (p,) = s.flush()
    for b in branches:
        only_b = [sig.name for sig in m.signals if sig.multiplexer_ids == [b]]
        for name in only_b:
            assert _value(p, schema, name, 0) is not None, name
    assert _value(p, schema, mux.name, 0) == branches[-1]


def test_bad_frames_are_counted_not_fatal(db):
    s, _ = _sampler(db)
    key, data = _frame(db, "DTC_STATUS")
    s.add(T0 + 0.1, key, b"\x06" + data[1:])  # multiplexer id 6: no branch of the DBC
    s.add(T0 + 0.2, 0x7FF, b"\x00" * 8)  # not in the DBC
    s.add(T0 + 0.3, *_frame(db, "VEHICLE_SPEED", VehicleSpeed=5))
    s.add(T0 + 1.3, *_frame(db, "VEHICLE_SPEED", VehicleSpeed=6))
    s.add(T0 + 0.5, *_frame(db, "VEHICLE_SPEED", VehicleSpeed=7))  # late: its second is closed
    s.flush()
    assert s.stats.frames_malformed == 1
    assert s.stats.frames_ignored == 1
    assert s.stats.frames_late == 1


def test_a_frame_shorter_than_its_message_gives_the_signals_that_fit(db):
    s, schema = _sampler(db)
    key, data = _frame(db, "VEHICLE_SPEED", VehicleSpeed=50, VehicleSpeedValid=1, VehicleSpeedChecksum=7)
    s.add(T0 + 0.1, key, data[:2])  # bytes 0-1: VehicleSpeed (bits 0-15) only
    (p,) = s.flush()
    assert s.stats.frames_malformed == 0
    assert _value(p, schema, "VehicleSpeed", 0) == 50
    assert _value(p, schema, "VehicleSpeedValid", 0) is None and _value(p, schema, "VehicleSpeedChecksum", 0) is None


def test_last_only_ids_are_decoded_once_per_second(db):
    s, _ = _sampler(db)
    for i in range(100):
        s.add(T0 + i / 100, *_frame(db, "ENGINE_DATA", EngineSpeed=1000 + i))
    s.flush()
    assert s.stats.frames_decoded == 1


def test_kernel_filters_cover_exactly_the_collected_ids(db):
    schema = schema_from_dbc(db, Collection(signals=frozenset({"VehicleSpeed", "Latitude"})))
    filters = FrameDecoder(db, schema).can_filters
    assert filters == [
        {"can_id": 0xB4, "can_mask": 0x7FF, "extended": False},
        {"can_id": 0x18F00100, "can_mask": 0x1FFFFFFF, "extended": True},
    ]
    assert EXTENDED_FLAG & 0x18F00100 == 0


def test_min_and_max_are_physical_extremes_under_a_negative_scale():
    """Schema v2: with scale -0.5 the raw maximum is the physical minimum (docs/packet-format.md)."""
    from pathlib import Path

    conf = dbc.load(Path(__file__).parent.parent / "docs" / "conformance" / "conformance.dbc")
    s, schema = _sampler(conf, Collection(aggregates={"Margin": ("last", "min", "max", "mean")}))
    out = []
    for t, margin in [(0.1, 90.0), (0.4, 40.0), (0.7, 75.0)]:  # raw 20, 120, 50
        out += s.add(T0 + t, *_frame(conf, "Cooling", Margin=margin))
    out += s.flush()
    p = out[0]
    assert _value(p, schema, "Margin", 0) == 75.0
    assert _value(p, schema, "Margin__min", 0) == 40.0
    assert _value(p, schema, "Margin__max", 0) == 90.0
    assert _value(p, schema, "Margin__mean", 0) == pytest.approx((90 + 40 + 75) / 3)
