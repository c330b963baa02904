"""Gateway configuration: one TOML file → one frozen, validated :class:`GatewayConfig`.

Loaded by the shared loader (:mod:`dcm_base.config`): every error names the file
and the key (``gateway.toml: mqtt.url: ...``), relative paths in the file are
relative to its folder, CLI flags override file values via :func:`load`
``overrides`` (dotted keys).
See ``deploy/gateway.example.toml`` for every key with its default.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dbc as dbc_files
from dcm_base import config as cfg
from dcm_base.broker_url import BrokerUrl, BrokerUrlError, plaintext_refused
from dcm_base.config import Key
from dcm_base.errors import ConfigError
from minute_packet import Collection, SchemaError, Topics, TopicError
from minute_packet.topics import check_prefix, check_vehicle_id

from .triggers import TriggerEngine, TriggerError, TriggerSpec, triggers_from_config


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
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    status_interval_s: float = 60.0
    outbox_max_bytes: int = 256 << 20
    backlog_rate: float = 50.0  # packets/s while draining a backlog after a reconnect
    idle_flush_s: float = 2.0  # no frame for this long (monotonic): close the open packet
    zstd_level: int = 19  # ~4 ms per packet on a PC, once a minute; 8 % smaller than level 3
    clock_step_s: float = 1.0  # a wall-clock change larger than this between frames is a step
    clock_slew: float = 0.1  # after a backward step, sample time runs this much slower until corrected
    triggers: tuple[TriggerSpec, ...] = ()  # edge triggers ([[triggers]], gateway/triggers.py)

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


def _broker(v: Any) -> BrokerUrl:
    try:
        return BrokerUrl.parse(cfg.string(v))
    except BrokerUrlError as exc:
        raise ValueError(str(exc)) from None


_KEYS: dict[str, Key] = {
    "vehicle_id": Key("vehicle_id", cfg.checked(check_vehicle_id, TopicError)),
    "model": Key("model", cfg.string),
    "can.interface": Key("interface", cfg.string),
    "can.channel": Key("channel", cfg.string),
    "can.bitrate": Key("bitrate", cfg.positive(int)),
    "can.fd": Key("fd", cfg.boolean),
    "can.kernel_filters": Key("kernel_filters", cfg.boolean),
    "can.rcvbuf_mb": Key("rcvbuf_bytes", cfg.mib),
    "dbc.path": Key("dbc_path", cfg.path, path=True),
    "dbc.vss_overlay": Key("vss_overlay", cfg.path, path=True),
    "mqtt.url": Key("broker", _broker),
    "mqtt.topic_prefix": Key("topic_prefix", cfg.checked(check_prefix, TopicError)),
    "mqtt.ca_file": Key("ca_file", cfg.path, path=True),
    "mqtt.cert_file": Key("cert_file", cfg.path, path=True),
    "mqtt.key_file": Key("key_file", cfg.path, path=True),
    "mqtt.allow_plaintext": Key("allow_plaintext", cfg.boolean),
    "mqtt.status_interval_s": Key("status_interval_s", cfg.positive(float)),
    "outbox.path": Key("outbox_path", cfg.path, path=True),
    "outbox.max_mb": Key("outbox_max_bytes", cfg.mib),
    "outbox.backlog_rate": Key("backlog_rate", cfg.positive(float)),
    "outbox.zstd_level": Key("zstd_level", cfg.number(int, low=1, high=22)),
    "time.idle_flush_s": Key("idle_flush_s", cfg.positive(float)),
    "time.clock_step_s": Key("clock_step_s", cfg.positive(float)),
    "time.clock_slew": Key("clock_slew", cfg.positive(float)),
    "triggers": Key("triggers", triggers_from_config),
    # the collection is built from these three below
    "collect.default": Key("collect.default", lambda v: v),
    "collect.signals": Key("collect.signals", lambda v: v),
    "collect.aggregates": Key("collect.aggregates", lambda v: v),
}
_REQUIRED = ("vehicle_id", "mqtt.url", "outbox.path")


def _collection(where: str, default: Any, signals: Any, aggregates: Any) -> Collection:
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
    """Read and validate a gateway config; ``overrides`` (dotted keys, e.g. ``"can.channel"``) win.

    Relative paths in the file are relative to the file's folder (:mod:`dcm_base.config`)."""
    where = cfg.where(path)
    fields = cfg.load_fields(path, _KEYS, overrides, required=_REQUIRED, tables=("collect.aggregates",))
    fields["collection"] = _collection(where, fields.pop("collect.default", ["last"]),
                                       fields.pop("collect.signals", None), fields.pop("collect.aggregates", {}))
    if bool(fields.get("cert_file")) != bool(fields.get("key_file")):
        raise ConfigError(f"{where}: mqtt.key_file: cert_file and key_file go together")
    refused = plaintext_refused(fields["broker"], fields.pop("allow_plaintext", False))
    if refused:
        raise ConfigError(f"{where}: mqtt.url: {refused}")
    try:
        return GatewayConfig(**fields)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


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
    if config.triggers:
        try:
            TriggerEngine(db, config.triggers, vehicle_id=config.vehicle_id, model=config.model, boot_id=bytes(16))
        except TriggerError as exc:
            raise ConfigError(f"{where}: triggers: {exc}") from None
    for key in ("ca_file", "cert_file", "key_file"):
        value = getattr(config, key)
        if value and not Path(value).is_file():
            raise ConfigError(f"{where}: mqtt.{key}: no such file {value}")
    return {"vehicle_id": config.vehicle_id, "columns": len(schema.columns), "fingerprint": schema.fingerprint.hex(),
            "frame_ids": len({(c.frame_id) for c in schema.columns}), "broker": str(config.broker)}
