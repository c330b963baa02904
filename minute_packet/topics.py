"""Every MQTT topic the project uses, built and parsed in one place.

Topics live under a prefix of one or more levels (``dcm``, ``fleet/eu``)::

    <prefix>/<vehicle>/telemetry     minute packets (QoS 1)                gateway → sink
    <prefix>/<vehicle>/events        event packets of edge triggers (QoS 1) gateway → sink, rules
    <prefix>/<vehicle>/status        retained online/offline status         gateway → anyone
    <prefix>/<vehicle>/alerts        alerts of the speed layer (QoS 1)      rules → anyone
    <prefix>/<vehicle>/config        configuration for one vehicle          cloud → gateway
    <prefix>/schemas/<fingerprint>   retained schema JSON (16 hex digits)   gateway → sink
    <prefix>/events/schema           schema-change events (JSON)            sink → anyone

``schemas`` and ``events`` are therefore reserved and cannot be vehicle ids;
a vehicle id is one non-empty topic level without wildcards. Parsing is the
exact inverse of building: :meth:`Topics.parse` accepts only topics that one
of the builders could have made, so a subscriber never splits strings itself.
"""
from __future__ import annotations

import dataclasses
import re

from .errors import TopicError

VEHICLE_KINDS = ("telemetry", "events", "status", "alerts", "config")
RESERVED_VEHICLE_IDS = frozenset({"schemas", "events"})
SCHEMA_EVENTS = "schema"
MAX_LEVEL_BYTES = 128  # a vehicle id or prefix level (VINs are 17; room for fleet-specific ids)
MAX_PREFIX_LEVELS = 8
_FINGERPRINT = re.compile(r"[0-9a-f]{16}")
_BAD_CHARS = ("+", "#", "/", "\x00")


def _check_level(level: str, what: str) -> str:
    if not isinstance(level, str) or not level:
        raise TopicError(f"{what} must be a non-empty string")
    if any(ch in level for ch in _BAD_CHARS):
        raise TopicError(f"{what} {level!r} must not contain '/', '+', '#' or NUL")
    if len(level.encode()) > MAX_LEVEL_BYTES:
        raise TopicError(f"{what} is longer than {MAX_LEVEL_BYTES} bytes")
    if level.startswith("$"):
        raise TopicError(f"{what} {level!r} must not start with '$' (reserved by MQTT brokers)")
    return level


def check_vehicle_id(vehicle: str) -> str:
    """Return ``vehicle`` if it can be a topic level and is not reserved, else raise :class:`TopicError`."""
    _check_level(vehicle, "vehicle id")
    if vehicle in RESERVED_VEHICLE_IDS:
        raise TopicError(f"vehicle id {vehicle!r} is reserved (it names a topic of the prefix)")
    return vehicle


def check_prefix(prefix: str) -> str:
    """Return ``prefix`` if it is 1..8 valid topic levels, else raise :class:`TopicError`."""
    if not isinstance(prefix, str) or not prefix:
        raise TopicError("topic prefix must be a non-empty string")
    levels = prefix.split("/")
    if len(levels) > MAX_PREFIX_LEVELS:
        raise TopicError(f"topic prefix {prefix!r} has more than {MAX_PREFIX_LEVELS} levels")
    for level in levels:
        if not level:
            raise TopicError(f"topic prefix {prefix!r} has an empty level (leading, trailing or double '/')")
        _check_level(level, "topic prefix level")
    return prefix


@dataclasses.dataclass(frozen=True)
class Topic:
    """A parsed topic: ``kind`` is one of :data:`VEHICLE_KINDS`, ``"schema"`` or ``"schema_events"``."""

    kind: str
    vehicle: str | None = None
    fingerprint: bytes | None = None


@dataclasses.dataclass(frozen=True)
class Topics:
    """Builders, subscription filters and the parser for one prefix."""

    prefix: str = "dcm"

    def __post_init__(self) -> None:
        check_prefix(self.prefix)

    # -- builders ---------------------------------------------------------------------------------

    def vehicle(self, vehicle: str, kind: str) -> str:
        if kind not in VEHICLE_KINDS:
            raise TopicError(f"unknown vehicle topic kind {kind!r}")
        return f"{self.prefix}/{check_vehicle_id(vehicle)}/{kind}"

    def telemetry(self, vehicle: str) -> str:
        return self.vehicle(vehicle, "telemetry")

    def events(self, vehicle: str) -> str:
        return self.vehicle(vehicle, "events")

    def status(self, vehicle: str) -> str:
        return self.vehicle(vehicle, "status")

    def alerts(self, vehicle: str) -> str:
        return self.vehicle(vehicle, "alerts")

    def config(self, vehicle: str) -> str:
        return self.vehicle(vehicle, "config")

    def schema(self, fingerprint: bytes) -> str:
        if not isinstance(fingerprint, bytes) or len(fingerprint) != 8:
            raise TopicError("a schema fingerprint is 8 bytes")
        return f"{self.prefix}/schemas/{fingerprint.hex()}"

    @property
    def schema_events(self) -> str:
        return f"{self.prefix}/events/{SCHEMA_EVENTS}"

    # -- subscription filters ---------------------------------------------------------------------

    def all_vehicles(self, kind: str) -> str:
        """Filter matching ``kind`` topics of every vehicle (``<prefix>/+/<kind>``)."""
        if kind not in VEHICLE_KINDS:
            raise TopicError(f"unknown vehicle topic kind {kind!r}")
        return f"{self.prefix}/+/{kind}"

    @property
    def all_schemas(self) -> str:
        return f"{self.prefix}/schemas/+"

    @staticmethod
    def shared(group: str, topic_filter: str) -> str:
        """A shared subscription (MQTT 5, also Mosquitto ≥ 2 on 3.1.1): one member receives each message."""
        _check_level(group, "share group")
        return f"$share/{group}/{topic_filter}"

    # -- parser -----------------------------------------------------------------------------------

    def parse(self, topic: str) -> Topic:
        """The :class:`Topic` a builder of this prefix made ``topic`` from; :class:`TopicError` otherwise."""
        head = self.prefix + "/"
        if not isinstance(topic, str) or not topic.startswith(head):
            raise TopicError(f"topic {topic!r} is not under prefix {self.prefix!r}")
        rest = topic[len(head):].split("/")
        if len(rest) != 2:
            raise TopicError(f"topic {topic!r} does not have two levels after the prefix")
        first, second = rest
        if first == "schemas":
            if not _FINGERPRINT.fullmatch(second):
                raise TopicError(f"schema topic {topic!r} does not end in 16 lowercase hex digits")
            return Topic("schema", fingerprint=bytes.fromhex(second))
        if first == "events":
            if second != SCHEMA_EVENTS:
                raise TopicError(f"unknown event topic {topic!r}")
            return Topic("schema_events")
        if second not in VEHICLE_KINDS:
            raise TopicError(f"unknown vehicle topic kind {second!r} in {topic!r}")
        return Topic(second, vehicle=check_vehicle_id(first))
