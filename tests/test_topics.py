"""The one topics module: every builder's output parses back to what built it, nothing else parses."""
from __future__ import annotations

import pytest

from gateway.config import ConfigError as GatewayConfigError
from gateway.config import load as load_gateway_config
from minute_packet import Topic, Topics, TopicError
from minute_packet.topics import VEHICLE_KINDS

FP = bytes.fromhex("0123456789abcdef")


@pytest.mark.parametrize("prefix", ["dcm", "fleet/eu", "a/b/c/d/e/f/g/h"])
def test_every_topic_parses_back(prefix):
    t = Topics(prefix)
    for kind in VEHICLE_KINDS:
        topic = t.vehicle("VIN123", kind)
        assert topic == f"{prefix}/VIN123/{kind}"
        assert t.parse(topic) == Topic(kind, vehicle="VIN123")
    assert t.parse(t.schema(FP)) == Topic("schema", fingerprint=FP)
    assert t.parse(t.schema_events) == Topic("schema_events")
    assert t.all_vehicles("telemetry") == f"{prefix}/+/telemetry"
    assert t.all_schemas == f"{prefix}/schemas/+"
    assert t.shared("sinks", t.all_vehicles("telemetry")) == f"$share/sinks/{prefix}/+/telemetry"


@pytest.mark.parametrize("topic", [
    "other/VIN1/telemetry",          # another prefix
    "fleet/VIN1/telemetry",          # only the first level of a 2-level prefix
    "fleet/eu/VIN1",                 # no kind
    "fleet/eu/VIN1/telemetry/x",     # one level too many
    "fleet/eu/VIN1/unknown",         # unknown kind
    "fleet/eu/schemas/0123",         # short fingerprint
    "fleet/eu/schemas/0123456789ABCDEF",  # upper-case hex is not what a builder makes
    "fleet/eu/events/other",
    "fleet/eu//telemetry",           # empty vehicle id
    "fleet/eu/$SYS/telemetry",
])
def test_foreign_topics_are_refused(topic):
    with pytest.raises(TopicError):
        Topics("fleet/eu").parse(topic)


@pytest.mark.parametrize("prefix", ["", "/dcm", "dcm/", "a//b", "dcm/+", "dcm/#", "$share/x", "x" * 129,
                                    "/".join("a" * 9)])
def test_bad_prefixes_are_refused(prefix):
    with pytest.raises(TopicError):
        Topics(prefix)


@pytest.mark.parametrize("vehicle", ["", "schemas", "events", "a/b", "a+", "#", "$x", "v" * 129, "a\x00b"])
def test_bad_or_reserved_vehicle_ids_are_refused(vehicle):
    with pytest.raises(TopicError):
        Topics().telemetry(vehicle)


def test_gateway_config_refuses_a_reserved_vehicle_id(tmp_path):
    cfg = tmp_path / "gw.toml"
    cfg.write_text('vehicle_id = "schemas"\n[mqtt]\nurl = "mqtt://127.0.0.1:1883"\n[outbox]\npath = "o.sqlite"\n')
    with pytest.raises(GatewayConfigError, match="vehicle_id.*reserved"):
        load_gateway_config(cfg)
    cfg.write_text('vehicle_id = "V1"\n[mqtt]\nurl = "mqtt://127.0.0.1:1883"\ntopic_prefix = "fleet//eu"\n'
                   '[outbox]\npath = "o.sqlite"\n')
    with pytest.raises(GatewayConfigError, match="topic_prefix.*empty level"):
        load_gateway_config(cfg)
