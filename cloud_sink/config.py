"""The sink's configuration: one frozen, validated :class:`SinkConfig` from a TOML file plus overrides.

Example ``sink.toml`` (every key optional except where a default makes no sense)::

    broker = "mqtt://broker:1883"
    topic_prefix = "dcm"
    share_group = "sinks"          # MQTT v5 shared subscription, for N workers
    client_id = "dcm-sink-1"       # must differ per worker; also the default worker id
    worker_id = "w1"               # goes into lake file names
    secret_file = "mask.key"       # key of the vehicle-id HMAC
    state = "state/sink.sqlite"
    quarantine = "state/quarantine"
    dbc = ["dbc/reference_car.dbc"]
    http = "127.0.0.1:9108"        # /metrics and /vehicles/{masked}/latest; "" for none
    http_token_file = "http.token" # bearer token every HTTP request must carry (>= 16 characters)
    ca_file = "broker-ca.pem"      # CA of an mqtts:// broker
    dedupe_days = 30               # dedupe keys are kept this long
    park_days = 7                  # packets whose schema never arrives are quarantined after this long
    intake_batch = 500             # messages staged (and acknowledged) per commit
    queue_size = 1000              # messages waiting for intake
    decoded_cache = 1000           # packets validated at intake kept for the lake writer

    [lake]
    root = "lake"                  # or "file:///srv/lake", "s3://bucket/lake?endpoint_override=..."
    layout = "vehicle"             # or "bucket"
    buckets = 64
    roll_mib = 128                 # cut a batch when this many staged bytes wait ...
    roll_interval_s = 900          # ... or when the oldest waiting packet is this old
    compression = "snappy"         # live files: cheap per file (the vehicle layout writes many)
    compact_compression = "zstd"   # files merged by `dcm sink compact`: smaller, read for years
    max_batch_packets = 20000      # also cut a batch when this many packets wait
    chunk_packets = 64             # packets decoded at once while writing
    row_group_rows = 32768         # rows per Parquet row group

Relative paths are relative to the config file's folder.
"""
from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dcm_base.broker_url import BrokerUrl, BrokerUrlError
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
    vehicle_secret: bytes
    topic_prefix: str = "dcm"
    share_group: str | None = None  # MQTT v5 shared subscription group for scale-out
    client_id: str = "dcm-sink"
    worker_id: str | None = None  # in lake file names; defaults to client_id
    dbc_paths: tuple[Path, ...] = ()  # schemas known up front (default collection)
    layout: str = "vehicle"
    buckets: int = 64
    compression: str = "snappy"
    compact_compression: str = "zstd"
    roll_bytes: int = 128 << 20
    roll_interval_s: float = 900.0
    max_batch_packets: int = 20_000  # a batch never holds more packets (bounds its key list in RAM)
    chunk_packets: int = 64  # decoded at once while writing (small: the decode stays in the CPU cache)
    row_group_rows: int = 32768  # rows per Parquet row group (bounds the rows held before a write)
    decoded_cache: int = 1000  # packets decoded at intake kept for the writer
    intake_batch: int = 500
    queue_size: int = 1000
    dedupe_days: float = 30.0  # dedupe keys older than this are pruned (bounds the staging database)
    park_days: float = 7.0  # packets of a schema that never arrived go to quarantine after this long
    http_host: str | None = None
    http_port: int = 9108
    http_token: bytes | None = dataclasses.field(default=None, repr=False)  # bearer token the HTTP API requires
    ca_file: str | None = None
    flush_interval_s: float | None = None  # deprecated alias of roll_interval_s

    def __post_init__(self) -> None:
        if self.flush_interval_s is not None:
            object.__setattr__(self, "roll_interval_s", float(self.flush_interval_s))
        checks = [
            (self.layout in LAYOUTS, "layout", f"must be one of {LAYOUTS}"),
            (1 <= self.buckets <= 65536, "buckets", "must be 1..65536"),
            (self.roll_bytes > 0, "roll_bytes", "must be positive"),
            (self.roll_interval_s > 0, "roll_interval_s", "must be positive"),
            (self.max_batch_packets > 0, "max_batch_packets", "must be positive"),
            (self.chunk_packets > 0, "chunk_packets", "must be positive"),
            (self.row_group_rows > 0, "row_group_rows", "must be positive"),
            (self.decoded_cache >= 0, "decoded_cache", "must be >= 0"),
            (self.dedupe_days > 0, "dedupe_days", "must be positive"),
            (self.park_days > 0, "park_days", "must be positive"),
            (self.intake_batch > 0 and self.queue_size > 0, "intake_batch", "must be positive"),
            (0 <= self.http_port < 65536, "http_port", "must be 0..65535"),
            (_valid_prefix(self.topic_prefix), "topic_prefix",
             "must be 1..8 non-empty topic levels without '+', '#', NUL or a leading '$'"),
            (self.share_group is None or (self.share_group and "/" not in self.share_group
                                          and "+" not in self.share_group and "#" not in self.share_group),
             "share_group", "must be a name without '/', '+' or '#'"),
            (len(self.vehicle_secret) >= 8, "secret_file", "the masking key must be at least 8 bytes"),
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


def _valid_prefix(prefix: object) -> bool:
    try:
        check_prefix(prefix)  # type: ignore[arg-type]
    except TopicError:
        return False
    return True


DEMO_SECRET = b"dcm-demo-secret"

# key in the TOML file (section.key) -> (SinkConfig field, type)
_KEYS: dict[str, tuple[str, type | tuple[type, ...]]] = {
    "broker": ("broker", str), "topic_prefix": ("topic_prefix", str), "share_group": ("share_group", str),
    "client_id": ("client_id", str), "worker_id": ("worker_id", str), "secret_file": ("secret_file", str),
    "state": ("state_path", str), "quarantine": ("quarantine_dir", str), "dbc": ("dbc_paths", list),
    "http": ("http", str), "http_token_file": ("http_token_file", str), "ca_file": ("ca_file", str), "intake_batch": ("intake_batch", int),
    "queue_size": ("queue_size", int), "decoded_cache": ("decoded_cache", int),
    "dedupe_days": ("dedupe_days", (int, float)), "park_days": ("park_days", (int, float)),
    "lake.root": ("lake_root", str), "lake.layout": ("layout", str), "lake.buckets": ("buckets", int),
    "lake.roll_mib": ("roll_mib", (int, float)), "lake.roll_interval_s": ("roll_interval_s", (int, float)),
    "lake.compression": ("compression", str), "lake.compact_compression": ("compact_compression", str), "lake.max_batch_packets": ("max_batch_packets", int),
    "lake.chunk_packets": ("chunk_packets", int), "lake.row_group_rows": ("row_group_rows", int),
}
_PATHS = {"secret_file", "state_path", "quarantine_dir", "ca_file", "http_token_file"}


def _flatten(doc: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in doc.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def load_config(path: Path | None, overrides: Mapping[str, Any] | None = None) -> SinkConfig:
    """Read ``path`` (TOML, may be None), apply ``overrides`` (field name -> value, None = unset)
    and validate. Raises :class:`ConfigError` naming the file and key."""
    where = str(path) if path else "command line"
    raw: dict[str, Any] = {}
    base = Path(".")
    if path is not None:
        base = path.parent
        try:
            doc = tomllib.loads(path.read_text())
        except OSError as exc:
            raise ConfigError(f"{path}: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        for key, value in _flatten(doc).items():
            if key not in _KEYS:
                raise ConfigError(f"{path}: unknown key {key!r} (known: {', '.join(sorted(_KEYS))})")
            field, typ = _KEYS[key]
            if not isinstance(value, typ) or isinstance(value, bool):
                raise ConfigError(f"{path}: {key} has type {type(value).__name__}")
            if field in _PATHS or field == "lake_root" and "://" not in value:
                value = str(base / value)
            if field == "dbc_paths":
                if not all(isinstance(v, str) for v in value):
                    raise ConfigError(f"{path}: dbc must be a list of paths")
                value = [str(base / v) for v in value]
            raw[field] = value
    for field, value in (overrides or {}).items():
        if value is not None:
            raw[field] = value
    try:
        return _build(raw)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _build(raw: dict[str, Any]) -> SinkConfig:
    try:
        broker = BrokerUrl.parse(raw.pop("broker", "mqtt://127.0.0.1:1883"))
    except BrokerUrlError as exc:
        raise ConfigError(f"broker: {exc}") from None
    secret_file = raw.pop("secret_file", None)
    if secret_file:
        try:
            secret = Path(secret_file).read_bytes().strip()
        except OSError as exc:
            raise ConfigError(f"secret_file: {secret_file}: {exc.strerror}") from None
    else:
        secret = DEMO_SECRET
    token_file = raw.pop("http_token_file", None)
    if token_file:
        try:
            raw["http_token"] = Path(token_file).read_bytes().strip()
        except OSError as exc:
            raise ConfigError(f"http_token_file: {token_file}: {exc.strerror}") from None
        if len(raw["http_token"]) < 16:
            raise ConfigError(f"http_token_file: {token_file}: the token must be at least 16 characters")
    http = raw.pop("http", None)
    if http:
        host, _, port = str(http).rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"http: expected host:port, got {http!r}")
        raw["http_host"], raw["http_port"] = host, int(port)
    if "roll_mib" in raw:
        raw["roll_bytes"] = int(float(raw.pop("roll_mib")) * (1 << 20))
    raw["dbc_paths"] = tuple(Path(p) for p in raw.get("dbc_paths", ()))
    for key in ("state_path", "quarantine_dir"):
        if key in raw:
            raw[key] = Path(raw[key])
    raw.setdefault("lake_root", "lake")
    raw.setdefault("state_path", Path("sink-state/state.sqlite"))
    raw.setdefault("quarantine_dir", Path("sink-state/quarantine"))
    return SinkConfig(broker=broker, vehicle_secret=secret, **raw)
