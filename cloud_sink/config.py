"""The sink's configuration: one frozen, validated :class:`SinkConfig` from a TOML file plus overrides.

Example ``sink.toml`` (every key optional except where a default makes no sense)::

    worker_id = "w1"               # goes into lake file names
    secret_file = "mask.key"       # key of the vehicle-id HMAC: required (``dcm sink init`` makes one, mode 0600)
    state = "state/sink.sqlite"
    quarantine = "state/quarantine"
    quarantine_max_mib = 1024      # the quarantine keeps at most this many MiB ...
    quarantine_max_files = 10000   # ... and files; the oldest are evicted first (counted)
    max_schemas = 2000             # schemas held; beyond it (or max_schema_mib) unused ones are pruned
    max_schema_mib = 64
    dbc = ["dbc/reference_car.dbc"]
    http = "127.0.0.1:9108"        # /metrics and /vehicles/{masked}/latest; "" for none
    http_token_file = "http.token" # bearer token every HTTP request must carry (>= 16 characters);
                                   # required when http listens beyond loopback
    dedupe_days = 30               # dedupe keys are kept this long
    park_days = 7                  # packets whose schema never arrives are quarantined after this long
    intake_batch = 500             # messages staged (and acknowledged) per commit
    queue_size = 1000              # messages waiting for intake
    validated_cache = 1000         # packets validated at intake kept for the lake writer

    [mqtt]
    url = "mqtts://broker:8883"
    topic_prefix = "dcm"
    share_group = "sinks"          # MQTT v5 shared subscription, for N workers
    client_id = "dcm-sink-1"       # must differ per worker; also the default worker id
    ca_file = "broker-ca.pem"      # CA of an mqtts:// broker
    allow_plaintext = false        # mqtt:// beyond loopback is refused unless this is true

    [retention]                    # `dcm sink retain` (cloud_sink/retention.py); unset: keep forever
    lake_days = 730                # lake partitions (by packet date) older than this are deleted
    quarantine_days = 30           # rejects kept this long
    events_days = 365              # schema events kept this long
    alerts_days = 365              # closed alerts in the rule workers' stores below kept this long
    alerts = ["rules-0.sqlite"]

    [lake]
    root = "lake"                  # or "file:///srv/lake", "s3://bucket/lake?endpoint_override=..."
    layout = "bucket"              # or "vehicle" (a folder per vehicle: small fleets)
    buckets = 64
    roll_mib = 128                 # cut a batch when this many staged bytes wait ...
    roll_interval_s = 900          # ... or when the oldest waiting packet is this old
    compression = "lz4"            # live files: cheap to write (snappy, zstd, none also work)
    compact_compression = "zstd"   # files merged by `dcm sink compact`: smaller, read for years
    max_batch_packets = 20000      # also cut a batch when this many packets wait
    chunk_packets = 64             # packets decoded at once while writing
    row_group_rows = 16384         # rows per Parquet row group (and per table the writer builds)

Loaded by the shared loader (:mod:`dcm_base.config`), as the gateway's config is:
errors read ``<file>: <key>: <problem>``, relative paths in the file are relative
to its folder, overrides (CLI flags) use the same dotted keys.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dcm_base import config as cfg
from dcm_base.broker_url import BrokerUrl, BrokerUrlError, is_loopback, plaintext_refused
from dcm_base.config import Key
from dcm_base.errors import ConfigError
from minute_packet import Topics, TopicError
from minute_packet.topics import check_prefix

from .lake import LAYOUTS


@dataclasses.dataclass(frozen=True)
class SinkConfig:
    broker: BrokerUrl
    lake_root: str | Path
    state_path: Path
    quarantine_dir: Path
    vehicle_secret: bytes | None  # None only for the commands that never mask (gaps, compact, retain)
    topic_prefix: str = "dcm"
    share_group: str | None = None  # MQTT v5 shared subscription group for scale-out
    client_id: str = "dcm-sink"
    worker_id: str | None = None  # in lake file names; defaults to client_id
    dbc_paths: tuple[Path, ...] = ()  # schemas known up front (default collection)
    layout: str = "bucket"
    buckets: int = 64
    compression: str = "lz4"
    compact_compression: str = "zstd"
    roll_bytes: int = 128 << 20
    roll_interval_s: float = 900.0
    max_batch_packets: int = 20_000  # a batch never holds more packets (bounds its key list in RAM)
    chunk_packets: int = 64  # decoded at once while writing (small: the decode stays in the CPU cache)
    row_group_rows: int = 16384  # rows per Parquet row group and per table built (bounds the rows held)
    validated_cache: int = 1000  # packets validated at intake kept for the writer
    intake_batch: int = 500
    queue_size: int = 1000
    dedupe_days: float = 30.0  # dedupe keys older than this are pruned (bounds the staging database)
    park_days: float = 7.0  # packets of a schema that never arrived go to quarantine after this long
    http_host: str | None = None
    http_port: int = 9108
    http_token: bytes | None = dataclasses.field(default=None, repr=False)  # bearer token the HTTP API requires
    ca_file: Path | None = None
    quarantine_max_bytes: int = 1 << 30  # the oldest rejects are evicted beyond it (counted)
    quarantine_max_files: int = 10_000
    max_schemas: int = 2000  # the registry's bounds (unused schemas pruned, oldest first)
    max_schema_bytes: int = 64 << 20
    lake_days: float | None = None  # retention (`dcm sink retain`); None keeps forever
    quarantine_days: float | None = None
    events_days: float | None = None
    alerts_days: float | None = None
    alert_stores: tuple[Path, ...] = ()  # the rule workers' stores whose closed alerts expire

    def __post_init__(self) -> None:
        checks = [
            (self.layout in LAYOUTS, "layout", f"must be one of {LAYOUTS}"),
            (1 <= self.buckets <= 65536, "buckets", "must be 1..65536"),
            (self.roll_bytes > 0, "roll_bytes", "must be positive"),
            (self.roll_interval_s > 0, "roll_interval_s", "must be positive"),
            (self.max_batch_packets > 0, "max_batch_packets", "must be positive"),
            (self.chunk_packets > 0, "chunk_packets", "must be positive"),
            (self.row_group_rows > 0, "row_group_rows", "must be positive"),
            (self.validated_cache >= 0, "validated_cache", "must be >= 0"),
            (self.dedupe_days > 0, "dedupe_days", "must be positive"),
            (self.park_days > 0, "park_days", "must be positive"),
            (self.quarantine_max_bytes >= 0, "quarantine_max_mib", "must be >= 0"),
            (self.quarantine_max_files >= 0, "quarantine_max_files", "must be >= 0"),
            (self.max_schemas > 0 and self.max_schema_bytes > 0, "max_schemas", "must be positive"),
            (self.intake_batch > 0 and self.queue_size > 0, "intake_batch", "must be positive"),
            (0 <= self.http_port < 65536, "http_port", "must be 0..65535"),
            (_valid_prefix(self.topic_prefix), "topic_prefix",
             "must be 1..8 non-empty topic levels without '+', '#', NUL or a leading '$'"),
            (self.share_group is None or (self.share_group and "/" not in self.share_group
                                          and "+" not in self.share_group and "#" not in self.share_group),
             "share_group", "must be a name without '/', '+' or '#'"),
            (self.vehicle_secret is None or len(self.vehicle_secret) >= 8, "secret_file",
             "the masking key must be at least 8 bytes"),
            (self.http_host is None or self.http_token is not None or is_loopback(self.http_host),
             "http_token_file", f"required when http listens beyond loopback ({self.http_host})"),
        ]
        for ok, key, why in checks:
            if not ok:
                raise ConfigError(f"{key}: {why}")

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)

    @property
    def worker(self) -> str:
        return self.worker_id or self.client_id


MISSING_SECRET = ("required: the vehicle-id masking key (create one with `dcm sink init`,"
                  " or `openssl rand -hex 32 > mask.key; chmod 600 mask.key`)")


def _valid_prefix(prefix: object) -> bool:
    try:
        check_prefix(prefix)  # type: ignore[arg-type]
    except TopicError:
        return False
    return True


def _broker(v: Any) -> BrokerUrl:
    try:
        return BrokerUrl.parse(cfg.string(v))
    except BrokerUrlError as exc:
        raise ValueError(str(exc)) from None


def _http(v: Any) -> tuple[str, int] | None:
    v = cfg.optional_string(v)
    if v is None:
        return None
    host, _, port = v.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"expected host:port, got {v!r}")
    return host, int(port)


_COUNT = cfg.positive(int)
_DAYS = cfg.positive(float)
_KEYS: dict[str, Key] = {
    "mqtt.url": Key("broker", _broker),
    "mqtt.topic_prefix": Key("topic_prefix", cfg.checked(check_prefix, TopicError)),
    "mqtt.share_group": Key("share_group", cfg.string),
    "mqtt.client_id": Key("client_id", cfg.string),
    "mqtt.ca_file": Key("ca_file", cfg.path, path=True),
    "mqtt.allow_plaintext": Key("allow_plaintext", cfg.boolean),
    "worker_id": Key("worker_id", cfg.string),
    "secret_file": Key("secret_file", cfg.path, path=True),
    "state": Key("state_path", cfg.path, path=True),
    "quarantine": Key("quarantine_dir", cfg.path, path=True),
    "quarantine_max_mib": Key("quarantine_max_bytes", cfg.mib),
    "quarantine_max_files": Key("quarantine_max_files", cfg.number(int, low=0)),
    "max_schemas": Key("max_schemas", _COUNT),
    "max_schema_mib": Key("max_schema_bytes", cfg.mib),
    "dbc": Key("dbc_paths", cfg.paths, path=True),
    "http": Key("http", _http),
    "http_token_file": Key("http_token_file", cfg.path, path=True),
    "intake_batch": Key("intake_batch", _COUNT),
    "queue_size": Key("queue_size", _COUNT),
    "validated_cache": Key("validated_cache", cfg.number(int, low=0)),
    "dedupe_days": Key("dedupe_days", _DAYS),
    "park_days": Key("park_days", _DAYS),
    "retention.lake_days": Key("lake_days", _DAYS),
    "retention.quarantine_days": Key("quarantine_days", _DAYS),
    "retention.events_days": Key("events_days", _DAYS),
    "retention.alerts_days": Key("alerts_days", _DAYS),
    "retention.alerts": Key("alert_stores", cfg.paths, path=True),
    "lake.root": Key("lake_root", cfg.path_or_uri, path=True),
    "lake.layout": Key("layout", cfg.one_of(*LAYOUTS)),
    "lake.buckets": Key("buckets", cfg.number(int, low=1, high=65536)),
    "lake.roll_mib": Key("roll_bytes", cfg.mib),
    "lake.roll_interval_s": Key("roll_interval_s", cfg.positive(float)),
    "lake.compression": Key("compression", cfg.string),
    "lake.compact_compression": Key("compact_compression", cfg.string),
    "lake.max_batch_packets": Key("max_batch_packets", _COUNT),
    "lake.chunk_packets": Key("chunk_packets", _COUNT),
    "lake.row_group_rows": Key("row_group_rows", _COUNT),
}
_RENAMED = {"broker": "mqtt.url", "topic_prefix": "mqtt.topic_prefix", "share_group": "mqtt.share_group",
            "client_id": "mqtt.client_id", "ca_file": "mqtt.ca_file", "decoded_cache": "validated_cache"}


def load_config(path: Path | None, overrides: Mapping[str, Any] | None = None, *,
                need_secret: bool = True, connects: bool = True) -> SinkConfig:
    """Read ``path`` (TOML, may be None), apply ``overrides`` (dotted keys as in the file,
    None = unset) and validate. Raises :class:`ConfigError` naming the file and key; a missing
    ``secret_file`` is one unless ``need_secret`` is False (commands that never mask a vehicle
    id), and then ``vehicle_secret`` is None. There is no built-in key. Plaintext ``mqtt://``
    beyond loopback is refused unless ``mqtt.allow_plaintext`` (not checked when the command
    never ``connects``)."""
    where = cfg.where(path)
    fields = cfg.load_fields(path, _KEYS, overrides, renamed=_RENAMED)
    broker = fields.pop("broker", None) or BrokerUrl.parse("mqtt://127.0.0.1:1883")
    refused = plaintext_refused(broker, fields.pop("allow_plaintext", False))
    if refused and connects:
        raise ConfigError(f"{where}: mqtt.url: {refused}")
    secret = _read_key(where, "secret_file", fields.pop("secret_file", None))
    if secret is None and need_secret:
        raise ConfigError(f"{where}: secret_file: {MISSING_SECRET}")
    token_file = fields.pop("http_token_file", None)
    if token_file is not None:
        fields["http_token"] = _read_key(where, "http_token_file", token_file)
        if len(fields["http_token"]) < 16:
            raise ConfigError(f"{where}: http_token_file: {token_file}: the token must be at least 16 characters")
    http = fields.pop("http", None)
    if http is not None:
        fields["http_host"], fields["http_port"] = http
    fields.setdefault("lake_root", Path("lake"))
    fields.setdefault("state_path", Path("sink-state/state.sqlite"))
    fields.setdefault("quarantine_dir", Path("sink-state/quarantine"))
    try:
        return SinkConfig(broker=broker, vehicle_secret=secret, **fields)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _read_key(where: str, key: str, path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"{where}: {key}: {path}: {exc.strerror}") from None


def check(config: SinkConfig, where: str) -> dict[str, Any]:
    """Deeper checks that touch files (the CA file exists, the lake root parses, without writing
    anything); returns the summary ``--check-config`` prints."""
    from .lake import Lake, LakeRootError

    if config.ca_file and not Path(config.ca_file).is_file():
        raise ConfigError(f"{where}: mqtt.ca_file: no such file {config.ca_file}")
    try:
        Lake(config.lake_root, layout=config.layout, buckets=config.buckets, compression=config.compression)
    except LakeRootError as exc:
        raise ConfigError(f"{where}: lake.root: {exc}") from None
    return {"worker": config.worker, "broker": str(config.broker), "lake": str(config.lake_root),
            "layout": config.layout, "share_group": config.share_group}
