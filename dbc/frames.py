"""Decoding one CAN frame with its DBC message, as cantools does, also where cantools' message codec fails.

:func:`decode_frame` is ``message.decode`` with ``allow_truncated`` (a frame shorter than its
message gives the signals that fit). Two things real DBCs do make cantools fail on frames a car
really sends, and are handled here, with cantools still doing every bit extraction:

* the whole-message codec fails on every frame ("unpacking failed": overlapping signals, as in
  cantools' own issue_63.dbc): each signal is then decoded alone, in a one-signal message of the
  same id and length, so a broken neighbour no longer takes the good signals with it;
* a signed selector whose branch ids are written unsigned (a CANopen SDO's 0x80 abort branch as
  ``m128`` on a signed 8-bit selector): cantools reads -128 and finds no branch; the selector's
  value modulo 2^length (its bit pattern) then chooses the branch, and the selector's own value
  stays what cantools reads.

A frame whose selector matches no branch even so raises cantools' :class:`DecodeError`. The
gateway's sampler, its edge triggers and the demo's ground truth all decode through here.
"""
from __future__ import annotations

import copy
import weakref
from typing import Any

from cantools.database.can import Message
from cantools.database.errors import DecodeError

# message -> (its one-signal messages, selector name -> branch ids), built once per message
_PARTS: weakref.WeakKeyDictionary[Any, tuple[list[tuple[Any, Message]], dict[str, set[int]]]] = \
    weakref.WeakKeyDictionary()
_SPLIT: weakref.WeakSet[Any] = weakref.WeakSet()  # messages whose whole-message codec fails


def _branches(tree: Any, out: dict[str, set[int]]) -> dict[str, set[int]]:
    for node in tree:
        if isinstance(node, dict):
            for selector, choices in node.items():
                out.setdefault(selector, set()).update(int(i) for i in choices)
                for sub in choices.values():
                    _branches(sub, out)
    return out


def _parts(message: Any) -> tuple[list[tuple[Any, Message]], dict[str, set[int]]]:
    got = _PARTS.get(message)
    if got is None:
        parts = []
        for s in message.signals:
            one = copy.copy(s)  # a plain signal: which branch it belongs to is checked here, not by cantools
            one.multiplexer_ids, one.multiplexer_signal, one.is_multiplexer = None, None, False
            try:
                parts.append((s, Message(frame_id=message.frame_id, name=message.name, length=message.length,
                                         signals=[one], is_extended_frame=message.is_extended_frame, strict=False)))
            except Exception:  # cantools cannot build even this one: the signal stays undecodable
                continue
        got = _PARTS[message] = (parts, _branches(message.signal_tree, {}))
    return got


def _per_signal(message: Any, data: bytes, scaling: bool) -> dict[str, int | float] | None:
    """Every signal decoded alone; None when a selector's value has no branch."""
    parts, branches = _parts(message)
    chosen: dict[str, int] = {}  # selector -> the branch id its bits choose
    for s, one in parts:
        if not s.is_multiplexer:
            continue
        try:
            value = int(one.decode(data, decode_choices=False, scaling=False, allow_truncated=True)[s.name])
        except (DecodeError, KeyError, ValueError):
            continue  # not in this (short) frame: its branches' signals are left out below
        ids = branches.get(s.name, set())
        if value in ids:
            chosen[s.name] = value
        elif value % (1 << s.length) in ids:
            chosen[s.name] = value % (1 << s.length)
        else:
            return None
    out: dict[str, int | float] = {}
    for s, one in parts:
        if s.multiplexer_ids and chosen.get(s.multiplexer_signal) not in s.multiplexer_ids:
            continue  # another branch's signal (or its selector is missing)
        try:
            out.update(one.decode(data, decode_choices=False, scaling=scaling, allow_truncated=True))
        except DecodeError:
            continue
    return out


def decode_frame(message: Any, data: bytes, *, scaling: bool) -> dict[str, int | float]:
    """The signals a frame carries (raw values, or physical with ``scaling``); raises cantools'
    :class:`DecodeError` for a frame whose multiplexer selects no branch of the message."""
    if message not in _SPLIT:
        try:
            return message.decode(data, decode_choices=False, scaling=scaling, allow_truncated=True)
        except DecodeError as exc:
            text = str(exc)
            if "unpacking failed" in text:
                _SPLIT.add(message)  # from now on this message is decoded signal by signal
            elif "multiplexer id" not in text:
                raise
            error = exc
    else:
        error = DecodeError(f"the multiplexer of {message.name} selects no branch")
    out = _per_signal(message, data, scaling)
    if out is None:
        raise error
    return out
