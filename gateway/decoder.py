"""Decode CAN frames into the raw values a schema's columns need (pure, no I/O).

Raw values are what the DBC puts on the wire before scaling: integers for
integer signals and IEEE floats for float signals. :func:`to_bits` turns them
into the ``uint64`` bit patterns the packet codec stores.
"""
from __future__ import annotations

import dataclasses
import struct
from typing import Any

from dcm_base.errors import InputError
from dbc.frames import decode_frame
from minute_packet.schema import Schema

EXTENDED_FLAG = 0x8000_0000
_U64 = (1 << 64) - 1


class FrameDecodeError(InputError):
    """A frame of a known ID does not decode with its DBC message (wrong length, bad mux...)."""


def frame_key(arbitration_id: int, is_extended: bool) -> int:
    """One integer per (ID, format): 29-bit IDs carry bit 31 so they never collide with 11-bit ones."""
    return arbitration_id | EXTENDED_FLAG if is_extended else arbitration_id


def to_bits(raw: int | float, kind: str) -> int:
    """The uint64 bit pattern of a raw value for a column kind (see ``minute_packet.schema.KINDS``)."""
    if kind == "f32":
        return struct.unpack("<I", struct.pack("<f", raw))[0]
    if kind == "f64":
        return struct.unpack("<Q", struct.pack("<d", raw))[0]
    return int(raw) & _U64


@dataclasses.dataclass(frozen=True)
class MessagePlan:
    """How one collected frame ID is handled."""

    message: Any  # cantools Message
    key: int
    # (signal name, column index, aggregate, kind) for every collected column of the message
    columns: tuple[tuple[str, int, str, str], ...]
    # every frame must be decoded (min/max/mean, or a multiplexed message whose
    # frames carry different signals); otherwise only the latest frame of a second is
    decode_each: bool


class FrameDecoder:
    """Knows which frame IDs a schema needs and decodes them to raw values."""

    def __init__(self, db: Any, schema: Schema) -> None:
        by_name = {m.name: m for m in db.messages}
        by_key = {frame_key(m.frame_id, m.is_extended_frame): m for m in db.messages}
        plans: dict[int, list[tuple[str, int, str, str]]] = {}
        messages: dict[int, Any] = {}
        for index, col in enumerate(schema.columns):
            # schema v2 names the frame exactly (a non-strict DBC may reuse a message name)
            message = by_key.get(frame_key(col.frame_id, col.extended)) if schema.version >= 2 else by_name.get(col.message)
            if message is None:
                raise ValueError(f"schema column {col.name!r} names message {col.message!r} missing from the DBC")
            key = frame_key(message.frame_id, message.is_extended_frame)
            messages[key] = message
            plans.setdefault(key, []).append((col.signal, index, col.aggregate, col.kind))
        self.plans: dict[int, MessagePlan] = {
            key: MessagePlan(
                message=messages[key],
                key=key,
                columns=tuple(cols),
                decode_each=messages[key].is_multiplexed() or any(agg != "last" for _, _, agg, _ in cols),
            )
            for key, cols in plans.items()
        }

    @property
    def can_filters(self) -> list[dict[str, int | bool]]:
        """python-can ``can_filters`` that pass exactly the collected IDs."""
        return [
            {
                "can_id": key & ~EXTENDED_FLAG,
                "can_mask": 0x1FFF_FFFF if key & EXTENDED_FLAG else 0x7FF,
                "extended": bool(key & EXTENDED_FLAG),
            }
            for key in sorted(self.plans)
        ]

    @staticmethod
    def decode(plan: MessagePlan, data: bytes) -> dict[str, int | float]:
        """Raw values of the signals a frame carries, or :class:`FrameDecodeError`."""
        try:
            # a frame shorter than the DBC says still gives the signals that fit in it; a message
            # cantools' codec cannot decode as a whole is decoded signal by signal (dbc.frames)
            return decode_frame(plan.message, data, scaling=False)
        except Exception as exc:  # cantools raises DecodeError, KeyError (mux), struct errors...
            raise FrameDecodeError(f"frame 0x{plan.message.frame_id:x} ({plan.message.name}): {exc}") from None
