"""The schema behind a packet's columns: which signal and aggregate each column holds.

A :class:`Schema` is derived from a DBC and a :class:`Collection` (which
signals, which aggregates). Its fingerprint, the first 8 bytes of a SHA-256
over its canonical JSON, travels in every packet so a reader can tell which
schema decodes it. The JSON form (:meth:`Schema.to_json`) is what a sink
needs: names, raw kinds, scaling, units, ranges, value tables and bit layout;
``docs/schema-v2.schema.json`` defines it and ``docs/packet-format.md`` states
every rule (value conversion, lake types, the fingerprint).

Two versions exist. **Version 2** (written by this code) canonicalises with
RFC 8785 (JSON Canonicalization Scheme) so any language can recompute the
fingerprint, carries the frame's extended-id flag, the bit layout as an
object and the multiplexer selector, and defines ``min``/``max`` as the
physical extremes (under a negative scale the raw extremes swap). **Version
1** (older gateways) is still read: its fingerprint is Python's
``json.dumps(sort_keys=True, separators=(",", ":"))``, its layout a string.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import rfc8785

from .errors import SchemaError

AGGREGATES = ("last", "min", "max", "mean")
KINDS = ("int", "uint", "f32", "f64")
BYTE_ORDERS = ("little_endian", "big_endian")
VALUE_TYPES = ("int64", "uint64", "float64")
SCHEMA_VERSION = 2  # what this code writes
SCHEMA_VERSIONS = (1, 2)  # what it reads
# names the lake gives its own columns and partition keys: no schema column (v2) may use one,
# compared ignoring case as DuckDB does
RESERVED_NAMES = frozenset({"ts", "seq", "boot_id", "vehicle", "out_of_range", "model", "date", "vehicle_bucket"})
_INT64 = (-(1 << 63), (1 << 63) - 1)
_UINT64 = (0, (1 << 64) - 1)


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
class Bits:
    """Where a signal sits in its frame (the DBC's ``start|length@order sign``)."""

    start: int
    length: int
    byte_order: str = "little_endian"
    signed: bool = False
    is_float: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"start": self.start, "length": self.length, "byte_order": self.byte_order,
                "signed": self.signed, "float": self.is_float}

    @classmethod
    def from_json(cls, d: Any) -> Bits:
        if not isinstance(d, Mapping) or set(d) != {"start", "length", "byte_order", "signed", "float"}:
            raise SchemaError("bits must be an object of start, length, byte_order, signed, float")
        bits = cls(d["start"], d["length"], d["byte_order"], d["signed"], d["float"])
        if (not _is_int(bits.start) or not _is_int(bits.length) or not 0 <= bits.start < 512
                or not 1 <= bits.length <= 64 or bits.byte_order not in BYTE_ORDERS
                or not isinstance(bits.signed, bool) or not isinstance(bits.is_float, bool)):
            raise SchemaError(f"bad bits {dict(d)!r}")
        return bits


@dataclasses.dataclass(frozen=True)
class Column:
    """One packet column: an aggregate of one DBC signal.

    ``bits``, ``multiplexer`` (the selector signal's name and the selector values for which this
    signal is sent), ``is_multiplexer`` and ``extended`` describe the signal on the bus; ``layout``
    is the version-1 spelling of the same (``start|length|byte order|signed|float|mux ids``)."""

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
    bits: Bits | None = None
    extended: bool = False
    multiplexer: tuple[str, tuple[int, ...]] | None = None
    is_multiplexer: bool = False
    vss: Mapping[str, Any] | None = None  # {"path": VSS path, "transform": ...} from an overlay (minute_packet.vss)
    layout: str = ""  # version 1 only

    @property
    def bit_length(self) -> int:
        """The signal's length in bits (64 when unknown)."""
        if self.bits is not None:
            return self.bits.length
        if self.layout:
            try:
                return int(self.layout.split("|")[1])
            except (IndexError, ValueError):
                pass
        return 64

    @property
    def integer_valued(self) -> bool:
        """Physical values are integers (cantools returns ``int`` for them)."""
        return (
            self.kind in ("int", "uint")
            and self.aggregate != "mean"
            and float(self.scale).is_integer()
            and float(self.offset).is_integer()
        )

    @property
    def value_type(self) -> str:
        """The type of the physical values: ``int64``, ``uint64`` or ``float64`` (docs/packet-format.md).

        Integer-valued columns take the first of int64 and uint64 that holds ``raw * scale + offset``
        for every raw value the signal's bit length allows; one that neither holds, and every other
        column, is float64."""
        if not self.integer_valued:
            return "float64"
        n = min(max(self.bit_length, 1), 64)
        lo, hi = (-(1 << (n - 1)), (1 << (n - 1)) - 1) if self.kind == "int" else (0, (1 << n) - 1)
        scale, offset = int(self.scale), int(self.offset)
        a, b = sorted((lo * scale + offset, hi * scale + offset))
        if _INT64[0] <= a and b <= _INT64[1]:
            return "int64"
        if _UINT64[0] <= a and b <= _UINT64[1]:
            return "uint64"
        return "float64"

    def numbers(self, raw: np.ndarray) -> np.ndarray:
        """The raw numbers behind raw bit patterns (``uint64``): int64, uint64 or float64."""
        raw = np.asarray(raw, dtype=np.uint64)
        if self.kind == "int":
            return raw.view(np.int64)
        if self.kind == "uint":
            return raw
        if self.kind == "f32":
            return (raw & np.uint64(0xFFFFFFFF)).astype(np.uint32).view(np.float32).astype(np.float64)
        return raw.view(np.float64)

    def physical(self, raw: np.ndarray) -> np.ndarray:
        """Physical values from raw bit patterns (``uint64``), of :attr:`value_type`."""
        numbers = self.numbers(raw)
        vt = self.value_type
        if vt == "int64":
            return numbers.astype(np.int64) * int(self.scale) + int(self.offset)
        if vt == "uint64":  # scale and offset are then >= 0, so uint64 arithmetic is exact
            return numbers.astype(np.uint64) * np.uint64(int(self.scale)) + np.uint64(int(self.offset))
        if self.scale == 1 and self.offset == 0:
            return numbers.astype(np.float64)
        return numbers.astype(np.float64) * self.scale + self.offset

    def to_json(self, version: int = SCHEMA_VERSION) -> dict[str, Any]:
        choices = {str(k): v for k, v in sorted(self.choices.items())} if self.choices else None
        if version == 1:
            return {"name": self.name, "message": self.message, "frame_id": self.frame_id, "signal": self.signal,
                    "aggregate": self.aggregate, "kind": self.kind, "scale": self.scale, "offset": self.offset,
                    "unit": self.unit, "minimum": self.minimum, "maximum": self.maximum, "choices": choices,
                    "layout": self.layout}
        bits = self.bits or Bits(0, self.bit_length)
        return {
            "name": self.name, "message": self.message, "frame_id": self.frame_id, "extended": self.extended,
            "signal": self.signal, "aggregate": self.aggregate, "kind": self.kind,
            "scale": float(self.scale), "offset": float(self.offset), "unit": self.unit,
            "minimum": None if self.minimum is None else float(self.minimum),
            "maximum": None if self.maximum is None else float(self.maximum),
            "choices": choices, "bits": bits.to_json(),
            "multiplexer": None if self.multiplexer is None else {"signal": self.multiplexer[0],
                                                                  "ids": list(self.multiplexer[1])},
            "is_multiplexer": self.is_multiplexer, "vss": self.vss,
        }

    @classmethod
    def from_json(cls, d: Any, version: int = SCHEMA_VERSION) -> Column:
        if not isinstance(d, Mapping):
            raise SchemaError("a column must be a JSON object")
        keys = set(_V1_KEYS if version == 1 else _V2_KEYS)
        if set(d) != keys:
            extra, missing = sorted(set(d) - keys), sorted(keys - set(d))
            raise SchemaError(f"column {d.get('name')!r}: unknown keys {extra} / missing keys {missing}")
        fields = dict(d)
        try:
            if fields["choices"] is not None:
                if not isinstance(fields["choices"], Mapping):
                    raise SchemaError("choices must be an object or null")
                fields["choices"] = {int(k): _str(v, "choice") for k, v in fields["choices"].items()}
            if version == 2:
                fields["bits"] = Bits.from_json(fields["bits"])
                mux = fields["multiplexer"]
                if mux is not None:
                    if (not isinstance(mux, Mapping) or set(mux) != {"signal", "ids"}
                            or not isinstance(mux["ids"], list) or not all(_is_int(i) for i in mux["ids"])):
                        raise SchemaError("multiplexer must be null or {signal, ids}")
                    fields["multiplexer"] = (_str(mux["signal"], "multiplexer signal"), tuple(mux["ids"]))
                for key in ("scale", "offset", "minimum", "maximum"):
                    if fields[key] is not None:
                        fields[key] = float(fields[key])
            col = cls(**fields)
        except (TypeError, ValueError, OverflowError) as exc:
            raise SchemaError(f"bad column definition: {exc}") from None
        _check_column(col, version)
        return col


_V1_KEYS = ("name", "message", "frame_id", "signal", "aggregate", "kind", "scale", "offset", "unit", "minimum",
            "maximum", "choices", "layout")
_V2_KEYS = ("name", "message", "frame_id", "extended", "signal", "aggregate", "kind", "scale", "offset", "unit",
            "minimum", "maximum", "choices", "bits", "multiplexer", "is_multiplexer", "vss")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)


def _str(v: Any, what: str) -> str:
    if not isinstance(v, str):
        raise SchemaError(f"{what} must be a string")
    return v


def _check_column(col: Column, version: int) -> None:
    where = f"column {col.name!r}"
    if not isinstance(col.name, str) or not col.name:
        raise SchemaError("a column name must be a non-empty string")
    for key in ("message", "signal", "unit"):
        _str(getattr(col, key), f"{where}: {key}")
    if col.kind not in KINDS or col.aggregate not in AGGREGATES:
        raise SchemaError(f"{where}: unknown kind or aggregate")
    if not _is_int(col.frame_id) or not 0 <= col.frame_id < 1 << 29:
        raise SchemaError(f"{where}: frame_id must be an integer 0..2^29-1")
    if not _is_number(col.scale) or not _is_number(col.offset):
        raise SchemaError(f"{where}: scale and offset must be finite numbers")
    for key in ("minimum", "maximum"):
        v = getattr(col, key)
        if v is not None and not _is_number(v):
            raise SchemaError(f"{where}: {key} must be a finite number or null")
    if version == 1:
        _str(col.layout, f"{where}: layout")
    else:
        if not isinstance(col.extended, bool) or not isinstance(col.is_multiplexer, bool):
            raise SchemaError(f"{where}: extended and is_multiplexer must be true or false")
        if not col.extended and col.frame_id > 0x7FF:
            raise SchemaError(f"{where}: a standard (11-bit) frame id is at most 0x7FF")
        if col.vss is not None:
            from .vss import parse_overlay

            if not isinstance(col.vss, Mapping) or set(col.vss) != {"path", "transform"}:
                raise SchemaError(f"{where}: vss must be null or {{path, transform}}")
            parse_overlay({_str(col.vss["path"], f"{where}: vss path"):
                           {"dbc2vss": {"signal": col.signal, "transform": col.vss["transform"]}}})


@dataclasses.dataclass(frozen=True)
class Schema:
    """Ordered packet columns plus the collection config they came from."""

    columns: tuple[Column, ...]
    collection: Mapping[str, Any]
    source: str = ""  # DBC file name, informative only (not fingerprinted)
    version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.version not in SCHEMA_VERSIONS:
            raise SchemaError(f"unsupported schema version {self.version!r}")
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise SchemaError("column names must be unique")
        if self.version >= 2:
            folded = [_fold(n) for n in names]
            if len(set(folded)) != len(folded):
                raise SchemaError("column names must be unique ignoring case")
            taken = sorted(n for n in names if _fold(n) in RESERVED_NAMES)
            if taken:
                raise SchemaError(f"column names {taken} are reserved by the lake")

    def _body(self) -> dict[str, Any]:
        return {"v": self.version, "columns": [c.to_json(self.version) for c in self.columns],
                "collection": self.collection}

    def canonical(self) -> bytes:
        """The bytes the fingerprint hashes: RFC 8785 over ``v``, ``columns`` and ``collection``
        (version 2); Python's sorted, separator-free ``json.dumps`` of the same (version 1)."""
        if self.version == 1:
            return json.dumps(self._body(), sort_keys=True, separators=(",", ":")).encode()
        try:
            return rfc8785.dumps(self._body())
        except rfc8785.CanonicalizationError as exc:
            raise SchemaError(f"schema cannot be canonicalised: {exc}") from None

    @property
    def fingerprint(self) -> bytes:
        return hashlib.sha256(self.canonical()).digest()[:8]

    def to_json(self) -> bytes:
        """The published form: the canonical body plus the informative ``source`` key."""
        body = self._body()
        body["source"] = self.source
        if self.version == 1:
            return json.dumps(body, sort_keys=True).encode()
        return rfc8785.dumps(body)

    @classmethod
    def from_json(cls, data: bytes | str) -> Schema:
        try:
            body = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise SchemaError(f"bad schema JSON: {exc}") from None
        if not isinstance(body, dict):
            raise SchemaError("a schema must be a JSON object")
        version = body.get("v")
        if version not in SCHEMA_VERSIONS or isinstance(version, bool):
            raise SchemaError(f"unsupported schema version {version!r}")
        columns, collection = body.get("columns"), body.get("collection")
        if not isinstance(columns, list) or not columns:
            raise SchemaError("columns must be a non-empty list")
        if not isinstance(collection, dict):
            raise SchemaError("collection must be an object")
        source = body.get("source", "")
        if not isinstance(source, str):
            raise SchemaError("source must be a string")
        schema = cls(columns=tuple(Column.from_json(c, version) for c in columns), collection=collection,
                     source=source, version=version)
        schema.canonical()  # a schema that cannot be fingerprinted (a number RFC 8785 refuses) is invalid here
        return schema


def _fold(name: str) -> str:
    return name.casefold()
