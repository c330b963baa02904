"""The sink's validator, pure: a received topic and payload become a packet, a schema, or a reject
reason. No I/O and no clock: the intake (:mod:`cloud_sink.ingest`) acts on the verdict."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from minute_packet import PacketDecodeError, Schema, SchemaError, TopicError, Topics
from minute_packet.codec import PacketInfo, validate


@dataclasses.dataclass(frozen=True)
class Rejected:
    """Why a message is refused (``reason`` names the quarantine folder and the metric label).
    ``packet`` says it arrived as a packet (it counts as received), not as a schema."""

    reason: str
    detail: str
    packet: bool


@dataclasses.dataclass(frozen=True)
class SchemaMessage:
    """A valid retained schema: its fingerprint matches its topic."""

    schema: Schema
    payload: bytes


@dataclasses.dataclass(frozen=True)
class PacketMessage:
    """A valid minute packet from the vehicle its topic names, matching its schema if known."""

    packet: PacketInfo


Verdict = Rejected | SchemaMessage | PacketMessage


class Validator:
    """Checks messages against the topic layout and the schemas known so far (``schemas`` is the
    registry's live mapping, read, never written)."""

    def __init__(self, topics: Topics, schemas: Mapping[bytes, Schema]) -> None:
        self.topics = topics
        self.schemas = schemas

    def check(self, topic: str, payload: bytes) -> Verdict:
        try:
            parsed = self.topics.parse(topic)
        except TopicError as exc:
            return Rejected("bad_topic", str(exc), packet=False)
        if parsed.kind == "schema":
            try:
                schema = Schema.from_json(payload)
            except SchemaError as exc:
                return Rejected("bad_schema", str(exc), packet=False)
            if schema.fingerprint != parsed.fingerprint:
                return Rejected("schema_fingerprint_mismatch", "topic and content differ", packet=False)
            return SchemaMessage(schema, payload)
        try:  # every check decode makes, without building the value matrices (the writer does)
            packet = validate(payload)
        except PacketDecodeError as exc:
            return Rejected(exc.reason, exc.detail, packet=True)
        if parsed.kind != "telemetry" or parsed.vehicle != packet.vehicle_id:
            return Rejected("vehicle_mismatch", f"packet is from {packet.vehicle_id!r}", packet=True)
        schema = self.schemas.get(packet.fingerprint)
        if schema is not None and len(schema.columns) != packet.columns:
            return Rejected("schema_mismatch",
                            f"{packet.columns} columns, schema {packet.fingerprint.hex()} has {len(schema.columns)}",
                            packet=True)
        return PacketMessage(packet)
