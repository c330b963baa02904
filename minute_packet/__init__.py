"""The minute packet format shared by gateway, simulator and sink.

``codec`` turns :class:`MinutePacket` objects into bytes and back; ``schema``
says which signal each column holds. The format is specified in
``docs/packet-format.md``.
"""
from .codec import MinutePacket, decode, encode
from .errors import PacketDecodeError, PacketEncodeError, PacketError, SchemaError, TopicError
from .schema import Collection, Column, Schema
from .schema_dbc import frame_messages, schema_from_dbc, signals_left_out
from .topics import Topic, Topics

__all__ = [
    "Collection",
    "Column",
    "MinutePacket",
    "PacketDecodeError",
    "PacketEncodeError",
    "PacketError",
    "Schema",
    "SchemaError",
    "Topic",
    "TopicError",
    "Topics",
    "decode",
    "encode",
    "frame_messages",
    "schema_from_dbc",
    "signals_left_out",
]
