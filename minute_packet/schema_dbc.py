"""A :class:`~minute_packet.schema.Schema` from a cantools database: column order and names.

The rules (docs/packet-format.md, "Schema JSON"): messages by frame id then name, signals in
DBC order, the configured aggregates of each; names ``Signal``, else ``Message.Signal``, else
``Message.Signal@<hex id>[x]``, with ``__<aggregate>`` appended.
"""
from __future__ import annotations

import math

from collections.abc import Mapping
from typing import Any

from .errors import SchemaError
from .schema import RESERVED_NAMES, SCHEMA_VERSION, SCHEMA_VERSIONS, Bits, Collection, Column, Schema, _fold


def _column_names(messages: list[Any], version: int) -> dict[int, str]:
    """The base column name of every signal (before any ``__<aggregate>`` suffix), keyed by the
    signal object's ``id`` (a non-strict DBC may repeat a signal name within one message).

    Version 2: ``Signal`` when no other signal of the DBC has the same name ignoring case and the
    name is not one the lake uses itself (:data:`RESERVED_NAMES`); else ``Message.Signal`` when
    that is unique ignoring case; else ``Message.Signal@<frame id>`` (hex, ``x`` appended for a
    29-bit id); a name still equal to an earlier one ignoring case gets ``#2``, ``#3``, ... in
    column order. Version 1: ``Signal`` when unique (case-sensitive), else ``Message.Signal``."""
    signals = [(m, s) for m in messages for s in _decodable(m, version)]
    if version == 1:
        counts: dict[str, int] = {}
        for _m, s in signals:
            counts[s.name] = counts.get(s.name, 0) + 1
        return {id(s): s.name if counts[s.name] == 1
                else f"{m.name}.{s.name}" for m, s in signals}
    plain: dict[str, int] = {}
    qualified: dict[str, int] = {}
    for m, s in signals:
        plain[_fold(s.name)] = plain.get(_fold(s.name), 0) + 1
        qualified[_fold(f"{m.name}.{s.name}")] = qualified.get(_fold(f"{m.name}.{s.name}"), 0) + 1
    out = {}
    for m, s in signals:
        if plain[_fold(s.name)] == 1 and _fold(s.name) not in RESERVED_NAMES:
            name = s.name
        elif qualified[_fold(f"{m.name}.{s.name}")] == 1:
            name = f"{m.name}.{s.name}"
        else:
            name = f"{m.name}.{s.name}@{m.frame_id:x}{'x' if m.is_extended_frame else ''}"
        out[id(s)] = name
    # still equal ignoring case (one message with signals "Ab" and "AB"): the later ones get #2, #3, ...
    seen: dict[str, int] = {}
    for key, name in out.items():
        k = seen[_fold(name)] = seen.get(_fold(name), 0) + 1
        if k > 1:
            out[key] = f"{name}#{k}"
    return out


MAX_SIGNAL_BITS = 64  # a cell holds 64 bits: longer signals (CAN FD payload blobs) are not columns


def _decodable(message: Any, version: int) -> list[Any]:
    """The message's signals a decoder keyed by signal name can read: in version 2, a signal whose
    name a later signal of the same message repeats (only a non-strict DBC allows it) is left
    out, since cantools and every decoder that returns values by name see only the last one; so
    is a signal longer than 64 bits, which no cell can hold (:func:`signals_left_out` lists both)."""
    if version == 1:
        return list(message.signals)
    last = {s.name: i for i, s in enumerate(message.signals)}
    return [s for i, s in enumerate(message.signals)
            if last[s.name] == i and s.length <= MAX_SIGNAL_BITS and _finite_scaling(s)]


def _finite_scaling(signal: Any) -> bool:
    return math.isfinite(signal.scale) and math.isfinite(signal.offset)


def frame_messages(db: Any) -> list[Any]:
    """One message per frame (id and format), the last the DBC defines, as cantools' and the
    gateway's lookup by frame id find it; a non-strict DBC may define one frame twice, but the
    bus carries one frame per id. Sorted by frame id, then name."""
    last = {(m.frame_id, bool(m.is_extended_frame)): m for m in db.messages}
    return sorted(last.values(), key=lambda m: (m.frame_id, m.name))


def signals_left_out(db: Any) -> list[str]:
    """``Message.Signal (why)`` for every signal of the DBC that schema v2 has no column for."""
    out = []
    kept_messages = {id(m) for m in frame_messages(db)}
    by_frame = {(m.frame_id, bool(m.is_extended_frame)): m for m in db.messages}
    for m in sorted(db.messages, key=lambda m: (m.frame_id, m.name)):
        if id(m) not in kept_messages:
            other = by_frame[(m.frame_id, bool(m.is_extended_frame))].name
            out += [f"{m.name}.{s.name} (its frame id is defined again by {other})" for s in m.signals]
            continue
        kept = {id(s) for s in _decodable(m, SCHEMA_VERSION)}
        for s in m.signals:
            if id(s) not in kept:
                why = (f"{s.length} bits" if s.length > MAX_SIGNAL_BITS else
                       "scale or offset not finite" if not _finite_scaling(s) else "name repeated later in its message")
                out.append(f"{m.name}.{s.name} ({why})")
    return out


def _kind(signal: Any) -> str:
    if signal.is_float:
        return "f32" if signal.length == 32 else "f64"
    return "int" if signal.is_signed else "uint"


def _layout(signal: Any) -> str:
    mux = ",".join(str(i) for i in (signal.multiplexer_ids or ()))
    return f"{signal.start}|{signal.length}|{signal.byte_order}|{int(signal.is_signed)}|{int(signal.is_float)}|{mux}"


def _range(signal: Any) -> tuple[float | None, float | None]:
    """The DBC's [minimum, maximum]; version 2 writes [0, 0] (the DBC's "not given") as nulls."""
    lo, hi = signal.minimum, signal.maximum
    if lo is not None and hi is not None and lo == hi == 0:
        return None, None
    # a bound beyond float range ("[0|1e400]", 2^1600 computed by a DBC generator) bounds nothing
    return (lo if lo is None or math.isfinite(lo) else None), (hi if hi is None or math.isfinite(hi) else None)


def schema_from_dbc(db: Any, collection: Collection | None = None, *, source: str = "",
                    version: int = SCHEMA_VERSION, vss: Mapping[str, Mapping[str, Any]] | None = None) -> Schema:
    """Build the schema of a cantools database under a collection config.

    Columns follow the DBC's message order (by frame id) and signal order.
    A column is named after its signal, qualified as ``Message.Signal`` when
    the name is not unique in the DBC, with ``__min``/``__max``/``__mean``
    appended for those aggregates. Multiplexer selector signals are collected
    like any other signal. ``vss`` maps ``Message.Signal`` or ``Signal`` to
    ``{"path", "transform"}`` (version 2 only; :func:`minute_packet.vss.load_overlay`).
    """
    collection = collection or Collection()
    if version not in SCHEMA_VERSIONS:
        raise SchemaError(f"unsupported schema version {version!r}")
    messages = sorted(db.messages, key=lambda m: (m.frame_id, m.name)) if version == 1 else frame_messages(db)
    names = _column_names(messages, version)
    columns: list[Column] = []
    for m in messages:
        for s in _decodable(m, version):
            base = names[id(s)]
            for agg in collection.for_signal(m.name, s.name):
                kind = "f64" if agg == "mean" else _kind(s)
                common = dict(
                    name=base if agg == "last" else f"{base}__{agg}",
                    message=m.name, frame_id=m.frame_id, signal=s.name, aggregate=agg, kind=kind,
                    scale=s.scale, offset=s.offset, unit=s.unit or "",
                    choices={int(k): str(v) for k, v in s.choices.items()} if s.choices else None,
                )
                if version == 1:
                    columns.append(Column(**common, minimum=s.minimum, maximum=s.maximum, layout=_layout(s)))
                    continue
                lo, hi = _range(s)
                mux = (s.multiplexer_signal, tuple(int(i) for i in s.multiplexer_ids)) \
                    if s.multiplexer_ids and s.multiplexer_signal else None
                columns.append(Column(
                    **common, minimum=lo, maximum=hi,
                    bits=Bits(s.start, s.length, s.byte_order, bool(s.is_signed), bool(s.is_float)),
                    extended=bool(m.is_extended_frame), multiplexer=mux, is_multiplexer=bool(s.is_multiplexer),
                    vss=(vss or {}).get(f"{m.name}.{s.name}") or (vss or {}).get(s.name),
                ))
    if not columns:
        if not any(m.signals for m in db.messages):
            raise SchemaError("the DBC defines no signal")
        if collection == Collection():
            raise SchemaError(f"no signal of the DBC can be a column: {', '.join(signals_left_out(db)[:5])}")
        raise SchemaError("the collection config selects no signal of the DBC")
    return Schema(columns=tuple(columns), collection=collection.to_json(), source=source, version=version)
