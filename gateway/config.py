"""Gateway configuration: one TOML file → one frozen, validated :class:`GatewayConfig`.

Every error names the file and the key (``gateway.toml: mqtt.url: ...``).
CLI flags override file values via :func:`load` ``overrides`` (dotted keys).
See ``deploy/gateway.example.toml`` for every key with its default.
"""
from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dbc as dbc_files
from dcm_base.broker_url import BrokerUrl, BrokerUrlError
from dcm_base.errors import ConfigError
from minute_packet import Collection, SchemaError, Topics, TopicError
from minute_packet.topics import check_prefix, check_vehicle_id


@dataclasses.dataclass(frozen=True)
class GatewayConfig:
    vehicle_id: str
    broker: BrokerUrl
    outbox_path: Path
    dbc_path: Path = dbc_files.REFERENCE_DBC
    vss_overlay: Path | None = None  # COVESA VSS names for the DBC's signals (minute_packet.vss)
    model: str = "reference-car"
    collection: Collection = dataclasses.field(default_factory=Collection)
    interface: str = "socketcan"
    channel: str = "can0"
    bitrate: int | None = None
    fd: bool = False  # also switched on by itself when a collected DBC message is CAN FD
    kernel_filters: bool = True
    rcvbuf_bytes: int = 16 << 20  # SocketCAN receive buffer: rides out reader stalls (SD card, GC)
    topic_prefix: str = "dcm"
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    status_interval_s: float = 60.0
    outbox_max_bytes: int = 256 << 20
    backlog_rate: float = 50.0  # packets/s while draining a backlog after a reconnect
    idle_flush_s: float = 2.0  # no frame for this long (monotonic): close the open packet
    zstd_level: int = 19  # ~4 ms per packet on a PC, once a minute; 8 % smaller than level 3
    clock_step_s: float = 1.0  # a wall-clock change larger than this between frames is a step
    clock_slew: float = 0.1  # after a backward step, sample time runs this much slower until corrected

    def __post_init__(self) -> None:
        try:
            check_vehicle_id(self.vehicle_id)
            check_prefix(self.topic_prefix)
        except TopicError as exc:
            raise ConfigError(str(exc)) from None

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)

    @property
    def telemetry_topic(self) -> str:
        return self.topics.telemetry(self.vehicle_id)

    @property
    def status_topic(self) -> str:
        return self.topics.status(self.vehicle_id)


# key in the TOML file → (GatewayConfig field, type check/convert)
def _str(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise ValueError("must be a non-empty string")
    return v


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError("must be true or false")
    return v


def _positive(kind: type) -> Any:
    def check(v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
            raise ValueError("must be a positive number")
        if kind is int and not float(v).is_integer():
            raise ValueError("must be an integer")
        return kind(v)

    return check


def _level(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 22:
        raise ValueError("must be an integer from 1 to 22")
    return v


def _topic_check(check: Any) -> Any:
    def convert(v: Any) -> str:
        try:
            return check(_str(v))
        except TopicError as exc:
            raise ValueError(str(exc)) from None

    return convert


_KEYS: dict[str, tuple[str, Any]] = {
    "vehicle_id": ("vehicle_id", _topic_check(check_vehicle_id)),
    "model": ("model", _str),
    "can.interface": ("interface", _str),
    "can.channel": ("channel", _str),
    "can.bitrate": ("bitrate", _positive(int)),
    "can.fd": ("fd", _bool),
    "can.kernel_filters": ("kernel_filters", _bool),
    "can.rcvbuf_mb": ("rcvbuf_bytes", lambda v: int(_positive(float)(v) * (1 << 20))),
    "dbc.path": ("dbc_path", lambda v: Path(_str(v))),
    "dbc.vss_overlay": ("vss_overlay", lambda v: Path(_str(v))),
    "mqtt.url": ("broker", lambda v: BrokerUrl.parse(_str(v))),
    "mqtt.topic_prefix": ("topic_prefix", _topic_check(check_prefix)),
    "mqtt.ca_file": ("ca_file", _str),
    "mqtt.cert_file": ("cert_file", _str),
    "mqtt.key_file": ("key_file", _str),
    "mqtt.status_interval_s": ("status_interval_s", _positive(float)),
    "outbox.path": ("outbox_path", lambda v: Path(_str(v))),
    "outbox.max_mb": ("outbox_max_bytes", lambda v: int(_positive(float)(v) * (1 << 20))),
    "outbox.backlog_rate": ("backlog_rate", _positive(float)),
    "outbox.zstd_level": ("zstd_level", _level),
    "time.idle_flush_s": ("idle_flush_s", _positive(float)),
    "time.clock_step_s": ("clock_step_s", _positive(float)),
    "time.clock_slew": ("clock_slew", _positive(float)),
}
_COLLECT = {"collect.default", "collect.signals", "collect.aggregates"}
_REQUIRED = ("vehicle_id", "mqtt.url", "outbox.path")


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and dotted not in ("collect.aggregates",):
            out.update(_flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def _collection(where: str, flat: Mapping[str, Any]) -> Collection:
    default = flat.get("collect.default", ["last"])
    signals = flat.get("collect.signals")
    aggregates = flat.get("collect.aggregates", {})
    try:
        if not isinstance(default, list) or not all(isinstance(a, str) for a in default):
            raise ValueError("collect.default: must be a list of aggregate names")
        if signals is not None and (not isinstance(signals, list) or not all(isinstance(s, str) for s in signals)):
            raise ValueError("collect.signals: must be a list of signal names")
        if not isinstance(aggregates, dict) or not all(isinstance(v, list) for v in aggregates.values()):
            raise ValueError("collect.aggregates: must map signal names to lists of aggregates")
        return Collection(
            default=tuple(default),
            aggregates={k: tuple(v) for k, v in aggregates.items()},
            signals=frozenset(signals) if signals is not None else None,
        )
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except SchemaError as exc:
        raise ConfigError(f"{where}: collect: {exc}") from None


def load(path: Path | None, overrides: Mapping[str, Any] | None = None) -> GatewayConfig:
    """Read and validate a gateway config; ``overrides`` (dotted keys, e.g. ``"can.channel"``) win."""
    where = str(path) if path else "command line"
    flat: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                flat = _flatten(tomllib.load(fh))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    flat.update({k: v for k, v in (overrides or {}).items() if v is not None})
    fields: dict[str, Any] = {}
    for key, value in flat.items():
        if key in _COLLECT:
            continue
        if key not in _KEYS:
            raise ConfigError(f"{where}: {key}: unknown key")
        name, convert = _KEYS[key]
        try:
            fields[name] = convert(value)
        except (ValueError, TypeError, BrokerUrlError) as exc:
            raise ConfigError(f"{where}: {key}: {exc}") from None
    missing = [k for k in _REQUIRED if _KEYS[k][0] not in fields]
    if missing:
        raise ConfigError(f"{where}: {missing[0]}: required")
    fields["collection"] = _collection(where, flat)
    if bool(fields.get("cert_file")) != bool(fields.get("key_file")):
        raise ConfigError(f"{where}: mqtt.key_file: cert_file and key_file go together")
    return GatewayConfig(**fields)


def load_vss(config: GatewayConfig) -> dict[str, dict[str, Any]] | None:
    """The VSS overlay the config names, or None (raises SchemaError)."""
    from minute_packet.vss import load_overlay

    return load_overlay(config.vss_overlay) if config.vss_overlay else None


def check(config: GatewayConfig, where: str) -> dict[str, Any]:
    """Deeper checks that touch files: the DBC loads and the collection selects signals.

    Returns a summary for ``--check-config``."""
    from minute_packet import schema_from_dbc

    try:
        db = dbc_files.load(config.dbc_path)
    except dbc_files.DbcError as exc:
        raise ConfigError(f"{where}: dbc.path: {exc}") from None
    try:
        vss = load_vss(config)
    except SchemaError as exc:
        raise ConfigError(f"{where}: dbc.vss_overlay: {exc}") from None
    try:
        schema = schema_from_dbc(db, config.collection, vss=vss)
    except SchemaError as exc:
        raise ConfigError(f"{where}: collect: {exc}") from None
    known = {s.name for m in db.messages for s in m.signals} | {f"{m.name}.{s.name}" for m in db.messages for s in m.signals}
    strangers = sorted(set(vss or ()) - known)
    if strangers:
        raise ConfigError(f"{where}: dbc.vss_overlay: signal {strangers[0]!r} is not in {config.dbc_path}")
    unknown = sorted((set(config.collection.signals or ()) | set(config.collection.aggregates)) - known)
    if unknown:
        raise ConfigError(f"{where}: collect: signal {unknown[0]!r} is not in {config.dbc_path}")
    for key in ("ca_file", "cert_file", "key_file"):
        value = getattr(config, key)
        if value and not Path(value).is_file():
            raise ConfigError(f"{where}: mqtt.{key}: no such file {value}")
    return {"vehicle_id": config.vehicle_id, "columns": len(schema.columns), "fingerprint": schema.fingerprint.hex(),
            "frame_ids": len({(c.frame_id) for c in schema.columns}), "broker": str(config.broker)}
