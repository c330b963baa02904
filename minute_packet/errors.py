"""Typed errors of the packet format, a branch of the project's tree (:mod:`dcm_base.errors`).

::

    InputError (dcm_base)
    └── PacketError
        ├── PacketEncodeError   the caller handed the encoder something invalid
        ├── PacketDecodeError   bytes off the wire are not a valid packet (has .reason)
        ├── SchemaError         a schema or collection config is invalid or unknown
        └── TopicError          a topic, prefix or vehicle id is not one the topics module builds

A packet error is bad input: the CLI exits 2 on one, and the sink counts and
quarantines a packet that does not decode instead of stopping.
"""
from __future__ import annotations

from dcm_base.errors import InputError


class PacketError(InputError):
    """Base class of every packet format error."""


class PacketEncodeError(PacketError):
    """A packet could not be encoded because its content is invalid."""


class PacketDecodeError(PacketError):
    """Bytes are not a valid packet. ``reason`` is a short code for counters and quarantine."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class SchemaError(PacketError):
    """A schema or collection config is invalid."""


class TopicError(PacketError, ValueError):
    """A topic, topic prefix or vehicle id is not valid (see :mod:`minute_packet.topics`)."""
