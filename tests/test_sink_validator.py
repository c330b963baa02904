"""The sink's pure parts, called directly: the validator's verdicts and the roll policy."""
from __future__ import annotations

import uuid

import dbc
from cloud_sink.roll import RollPolicy
from cloud_sink.staging import Backlog
from cloud_sink.validator import PacketMessage, Rejected, SchemaMessage, Validator
from minute_packet import Collection, Topics, encode, schema_from_dbc
from test_sink import _packet


def test_verdicts(schema):
    topics = Topics("fleet/eu")
    other = schema_from_dbc(dbc.load(dbc.REFERENCE_DBC), Collection(aggregates={"YawRate": ("last", "max")}))
    known = {}
    v = Validator(topics, known)
    boot = uuid.uuid4().bytes
    payload = encode(_packet(schema, "CAR1", 3, boot))
    ok = v.check(topics.telemetry("CAR1"), payload)
    assert isinstance(ok, PacketMessage) and (ok.packet.vehicle_id, ok.packet.seq) == ("CAR1", 3)
    assert v.check("dcm/CAR1/telemetry", payload) == Rejected("bad_topic", v.check("dcm/CAR1/telemetry", payload).detail,
                                                              packet=False)
    assert v.check(topics.telemetry("CAR2"), payload).reason == "vehicle_mismatch"
    assert v.check(topics.status("CAR1"), payload).reason == "vehicle_mismatch"
    assert v.check(topics.telemetry("CAR1"), b"junk") == Rejected("bad_magic", "not a minute packet", packet=True)
    offer = v.check(topics.schema(schema.fingerprint), schema.to_json())
    assert isinstance(offer, SchemaMessage) and offer.schema.fingerprint == schema.fingerprint
    assert v.check(topics.schema(other.fingerprint), schema.to_json()).reason == "schema_fingerprint_mismatch"
    assert v.check(topics.schema(schema.fingerprint), b"{").reason == "bad_schema"
    known[schema.fingerprint] = other  # a schema of another width under this fingerprint
    assert v.check(topics.telemetry("CAR1"), payload).reason == "schema_mismatch"


def test_roll_policy():
    p = RollPolicy(roll_bytes=1000, max_packets=10, interval_s=60)
    assert p.tick_s == 1.0 and RollPolicy(1, 1, 2).tick_s == 0.5
    assert p.due(True, Backlog(0, 0, None), 0)  # an unfinished batch is redone at once
    assert not p.due(False, Backlog(0, 0, None), 1e9)
    assert not p.due(False, Backlog(2, 100, 100.0), 150.0)
    assert p.due(False, Backlog(2, 1000, 100.0), 150.0)  # bytes
    assert p.due(False, Backlog(10, 100, 100.0), 150.0)  # packets
    assert p.due(False, Backlog(2, 100, 100.0), 160.0)  # age
