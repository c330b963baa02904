"""The schema behind a packet's columns: which signal and aggregate each column holds.

A :class:`Schema` is derived from a DBC and a :class:`Collection` (which
signals, which aggregates). Its fingerprint, the first 8 bytes of a SHA-256
over its canonical JSON, travels in every packet so a reader can tell which
schema decodes it. The JSON form (:meth:`Schema.to_json`) is what a sink
needs: names, raw kinds, scaling, units, ranges and value tables.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import SchemaError

AGGREGATES = ("last", "min", "max", "mean")
KINDS = ("int", "uint", "f32", "f64")
SCHEMA_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Collection:
    """What a gateway collects.

    ``aggregates`` maps a signal (``"Signal"`` or ``"Message.Signal"``) to the
    aggregates sampled for it; every other signal gets ``default``. When
    ``signals`` is given only those signals are collected.
    """

    default: tuple[str, ...] = ("last",)
    aggregates: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    signals: frozenset[str] | None = None

    def __post_init__(self) -> None:
        for key, aggs in [("default", self.default), *self.aggregates.items()]:
            if not aggs or any(a not in AGGREGATES for a in aggs) or len(set(aggs)) != len(aggs):
                raise SchemaError(f"aggregates for {key!r} must be distinct values of {AGGREGATES}, got {list(aggs)}")

    def for_signal(self, message: str, signal: str) -> tuple[str, ...]:
        """Aggregates collected for a signal, empty when it is not collected."""
        qualified = f"{message}.{signal}"
        if self.signals is not None and qualified not in self.signals and signal not in self.signals:
            return ()
        return tuple(self.aggregates.get(qualified) or self.aggregates.get(signal) or self.default)

    def to_json(self) -> dict[str, Any]:
        return {
            "default": list(self.default),
            "aggregates": {k: list(v) for k, v in sorted(self.aggregates.items())},
            "signals": sorted(self.signals) if self.signals is not None else None,
        }


@dataclasses.dataclass(frozen=True)
class Column:
    """One packet column: an aggregate of one DBC signal."""

    name: str
    message: str
    frame_id: int
    signal: str
    aggregate: str
    kind: str
    scale: float
    offset: float
    unit: str = ""
    minimum: float | None = None
    maximum: float | None = None
    choices: Mapping[int, str] | None = None
    layout: str = ""  # start|length|byte order|signed|float|mux ids: part of the fingerprint

    @property
    def integer_valued(self) -> bool:
        """Physical values are integers (cantools returns ``int`` for them)."""
        return (
            self.kind in ("int", "uint")
            and self.aggregate != "mean"
            and float(self.scale).is_integer()
            and float(self.offset).is_integer()
        )

    def physical(self, raw: np.ndarray) -> np.ndarray:
        """Physical values from raw bit patterns (``uint64``), as cantools computes them."""
        raw = np.asarray(raw, dtype=np.uint64)
        if self.kind == "int":
            numbers = raw.view(np.int64)
        elif self.kind == "uint":
            numbers = raw
        elif self.kind == "f32":
            numbers = raw.astype(np.uint32).view(np.float32).astype(np.float64)
        else:
            numbers = raw.view(np.float64)
        if self.integer_valued:
            return numbers.astype(np.int64) * int(self.scale) + int(self.offset)
        if self.scale == 1 and self.offset == 0:
            return numbers.astype(np.float64)
        return numbers.astype(np.float64) * self.scale + self.offset

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["choices"] = {str(k): v for k, v in sorted(self.choices.items())} if self.choices else None
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Column:
        try:
            fields = dict(d)
            if fields.get("choices"):
                fields["choices"] = {int(k): str(v) for k, v in fields["choices"].items()}
            col = cls(**fields)
        except (TypeError, ValueError, AttributeError) as exc:
            raise SchemaError(f"bad column definition: {exc}") from None
        if col.kind not in KINDS or col.aggregate not in AGGREGATES:
            raise SchemaError(f"column {col.name!r}: unknown kind or aggregate")
        return col


@dataclasses.dataclass(frozen=True)
class Schema:
    """Ordered packet columns plus the collection config they came from."""

    columns: tuple[Column, ...]
    collection: Mapping[str, Any]
    source: str = ""  # DBC file name, informative only (not fingerprinted)

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise SchemaError("column names must be unique")

    def _canonical(self) -> bytes:
        body = {"v": SCHEMA_VERSION, "columns": [c.to_json() for c in self.columns], "collection": self.collection}
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    @property
    def fingerprint(self) -> bytes:
        return hashlib.sha256(self._canonical()).digest()[:8]

    def to_json(self) -> bytes:
        body = json.loads(self._canonical())
        body["source"] = self.source
        return json.dumps(body, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> Schema:
        try:
            body = json.loads(data)
            if body.get("v") != SCHEMA_VERSION:
                raise SchemaError(f"unsupported schema version {body.get('v')!r}")
            return cls(
                columns=tuple(Column.from_json(c) for c in body["columns"]),
                collection=body["collection"],
                source=body.get("source", ""),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise SchemaError(f"bad schema JSON: {exc}") from None


def _kind(signal: Any) -> str:
    if signal.is_float:
        return "f32" if signal.length == 32 else "f64"
    return "int" if signal.is_signed else "uint"


def _layout(signal: Any) -> str:
    mux = ",".join(str(i) for i in (signal.multiplexer_ids or ()))
    return f"{signal.start}|{signal.length}|{signal.byte_order}|{int(signal.is_signed)}|{int(signal.is_float)}|{mux}"


def schema_from_dbc(db: Any, collection: Collection | None = None, *, source: str = "") -> Schema:
    """Build the schema of a cantools database under a collection config.

    Columns follow the DBC's message order (by frame id) and signal order.
    A column is named after its signal, qualified as ``Message.Signal`` when
    the name is not unique in the DBC, with ``__min``/``__max``/``__mean``
    appended for those aggregates. Multiplexer selector signals are collected
    like any other signal.
    """
    collection = collection or Collection()
    messages = sorted(db.messages, key=lambda m: (m.frame_id, m.name))
    counts: dict[str, int] = {}
    for m in messages:
        for s in m.signals:
            counts[s.name] = counts.get(s.name, 0) + 1
    columns: list[Column] = []
    for m in messages:
        for s in m.signals:
            base = s.name if counts[s.name] == 1 else f"{m.name}.{s.name}"
            for agg in collection.for_signal(m.name, s.name):
                kind = "f64" if agg == "mean" else _kind(s)
                columns.append(
                    Column(
                        name=base if agg == "last" else f"{base}__{agg}",
                        message=m.name,
                        frame_id=m.frame_id,
                        signal=s.name,
                        aggregate=agg,
                        kind=kind,
                        scale=s.scale,
                        offset=s.offset,
                        unit=s.unit or "",
                        minimum=s.minimum,
                        maximum=s.maximum,
                        choices={int(k): str(v) for k, v in s.choices.items()} if s.choices else None,
                        layout=_layout(s),
                    )
                )
    if not columns:
        raise SchemaError("the collection config selects no signal of the DBC")
    return Schema(columns=tuple(columns), collection=collection.to_json(), source=source)
