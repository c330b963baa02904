"""Decoding one CAN frame with its DBC message, as cantools does, also where cantools' message codec fails.

:func:`decode_frame` is ``message.decode`` with ``allow_truncated`` (a frame shorter than its
message gives the signals that fit). Some non-strict DBCs make cantools' whole-message codec fail
on every frame ("unpacking failed": overlapping signals, signals past the declared length, a
codec cantools compiles wrong); then each signal is decoded by cantools alone, in a one-signal
message of the same id and length, so a broken neighbour no longer takes the good signals with
it. Multiplexed signals are kept only when the frame's selector value is one of theirs. The
gateway's sampler, its edge triggers and the demo's ground truth all decode through here.
"""
from __future__ import annotations

import copy
import weakref
from typing import Any

from cantools.database.can import Message
from cantools.database.errors import DecodeError

# message -> its one-signal messages (None: the whole-message codec works); dropped with the database
_SPLIT: weakref.WeakKeyDictionary[Any, list[tuple[Any, Message]] | None] = weakref.WeakKeyDictionary()


def _split(message: Any) -> list[tuple[Any, Message]]:
    out = []
    for s in message.signals:
        one = copy.copy(s)  # a plain signal: which branch it belongs to is checked here, not by cantools
        one.multiplexer_ids, one.multiplexer_signal, one.is_multiplexer = None, None, False
        try:
            out.append((s, Message(frame_id=message.frame_id, name=message.name, length=message.length,
                                   signals=[one], is_extended_frame=message.is_extended_frame, strict=False)))
        except Exception:  # cantools cannot build even this one: the signal stays undecodable
            continue
    return out


def _selectors(data: bytes, parts: list[tuple[Any, Message]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for s, one in parts:
        if s.is_multiplexer:
            try:
                out[s.name] = int(one.decode(data, decode_choices=False, scaling=False, allow_truncated=True)[s.name])
            except (DecodeError, KeyError, ValueError):
                continue
    return out


def _per_signal(message: Any, data: bytes, scaling: bool) -> dict[str, int | float]:
    parts = _SPLIT.get(message) or []
    selectors = _selectors(data, parts) if message.is_multiplexed() else {}
    out: dict[str, int | float] = {}
    for s, one in parts:
        if s.multiplexer_ids and selectors.get(s.multiplexer_signal) not in s.multiplexer_ids:
            continue  # another branch's signal (or its selector is missing)
        try:
            out.update(one.decode(data, decode_choices=False, scaling=scaling, allow_truncated=True))
        except DecodeError:
            continue
    return out


def decode_frame(message: Any, data: bytes, *, scaling: bool) -> dict[str, int | float]:
    """The signals a frame carries (raw values, or physical with ``scaling``); raises what cantools
    raises for a frame that does not fit its message at all (a multiplexer id with no branch)."""
    if _SPLIT.get(message, None) is None:
        try:
            return message.decode(data, decode_choices=False, scaling=scaling, allow_truncated=True)
        except DecodeError as exc:
            if "unpacking failed" not in str(exc):
                raise
            _SPLIT[message] = _split(message)  # from now on this message is decoded signal by signal
    return _per_signal(message, data, scaling)
