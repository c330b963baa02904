"""The rules service's configuration: one TOML file to a frozen, validated :class:`ServiceConfig`.

Example ``rules-service.toml`` (paths relative to the file's folder)::

    broker = "mqtts://broker:8883"     # with ca_file; mqtt:// beyond loopback needs allow_plaintext = true
    allow_plaintext = false            # the explicit choice of plaintext MQTT or http:// webhooks beyond loopback
    topic_prefix = "dcm"
    worker = 0                         # this worker's partition ...
    workers = 2                        # ... of this many: vehicle hash mod workers == worker
    client_id = "dcm-rules-0"          # its own persistent session; default dcm-rules-<worker>
    state = "state/rules-0.sqlite"
    rules = "rules.toml"               # the deployment's rules (speed_layer.config)
    dbc = ["dbc/reference_car.dbc"]    # schemas known up front (others arrive retained)
    history = 120                      # packets kept per vehicle for replays of late packets
    batch = 200                        # messages per commit
    queue_size = 1000
    dedupe_days = 30

    lake = "lake"                      # optional: alerts snapshot under <lake>/alerts/worker=<k>/ (or s3://...)
    secret_file = "mask.key"           # required with lake: the sink's vehicle-id masking key
    lake_interval_s = 300              # how often a changed alert table is written to the lake

    [[webhooks]]
    name = "ops"
    url = "https://ops.example/alerts"
    token_file = "ops.token"           # optional: Authorization: Bearer <token>
    max_queue = 10000                  # deliveries kept for retry; beyond it the oldest are dropped (counted)
    timeout_s = 5

"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dcm_base.broker_url import BrokerUrl, BrokerUrlError, is_loopback, plaintext_refused
from dcm_base.config import load_toml
from minute_packet import TopicError
from minute_packet.topics import check_prefix

from .errors import RulesConfigError


Broker = BrokerUrl  # the project's broker URL (dcm_base.broker_url)


@dataclasses.dataclass(frozen=True)
class Webhook:
    name: str
    url: str
    token: str | None = dataclasses.field(default=None, repr=False)
    max_queue: int = 10_000
    timeout_s: float = 5.0

    @property
    def target(self) -> str:
        return f"webhook:{self.name}"


@dataclasses.dataclass(frozen=True)
class ServiceConfig:
    broker: Broker
    state_path: Path
    topic_prefix: str = "dcm"
    worker: int = 0
    workers: int = 1
    client_id: str = ""
    rules_path: Path | None = None
    dbc_paths: tuple[Path, ...] = ()
    history: int = 120
    batch: int = 200
    queue_size: int = 1000
    dedupe_days: float = 30.0
    mqtt_max_queue: int = 100_000
    ca_file: Path | None = None
    webhooks: tuple[Webhook, ...] = ()
    lake: str | None = None
    vehicle_secret: bytes | None = dataclasses.field(default=None, repr=False)
    lake_interval_s: float = 300.0

    def __post_init__(self) -> None:
        if not self.client_id:
            object.__setattr__(self, "client_id", f"dcm-rules-{self.worker}")


_KEYS = {"broker", "topic_prefix", "worker", "workers", "client_id", "state", "rules", "dbc", "history", "batch",
         "queue_size", "dedupe_days", "mqtt_max_queue", "ca_file", "webhooks", "lake", "secret_file",
         "lake_interval_s", "allow_plaintext"}


def _int(doc: Mapping[str, Any], key: str, default: int, lo: int, where: str) -> int:
    v = doc.get(key, default)
    if not isinstance(v, int) or isinstance(v, bool) or v < lo:
        raise RulesConfigError(f"{where}: {key}: must be an integer >= {lo}, got {v!r}")
    return v


def load_service_config(path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> ServiceConfig:
    """Read the file (if any), apply ``overrides`` (CLI flags; None values ignored), validate."""
    where = str(path) if path else "<flags>"
    doc: dict[str, Any] = {}
    base = Path(path).parent if path else Path.cwd()
    if path:
        doc = load_toml(path, RulesConfigError)
    doc.update({k: v for k, v in (overrides or {}).items() if v is not None})
    unknown = set(doc) - _KEYS
    if unknown:
        raise RulesConfigError(f"{where}: {sorted(unknown)[0]}: unknown key")

    def rel(p: Any, key: str) -> Path:
        if not isinstance(p, str) or not p:
            raise RulesConfigError(f"{where}: {key}: must be a path")
        q = Path(p)
        return q if q.is_absolute() else base / q

    if "broker" not in doc:
        raise RulesConfigError(f"{where}: broker: missing (mqtt://host:port)")
    try:
        broker = Broker.parse(doc["broker"]) if isinstance(doc["broker"], str) else None
    except BrokerUrlError as exc:
        raise RulesConfigError(f"{where}: broker: {exc}") from None
    if broker is None:
        raise RulesConfigError(f"{where}: broker: must be a URL string")
    if "state" not in doc:
        raise RulesConfigError(f"{where}: state: missing (path of the worker's state database)")
    prefix = doc.get("topic_prefix", "dcm")
    try:
        check_prefix(prefix)
    except TopicError as exc:
        raise RulesConfigError(f"{where}: topic_prefix: {exc}") from None
    workers = _int(doc, "workers", 1, 1, where)
    worker = _int(doc, "worker", 0, 0, where)
    if worker >= workers:
        raise RulesConfigError(f"{where}: worker: must be below workers ({workers}), got {worker}")
    dbcs = doc.get("dbc", [])
    if isinstance(dbcs, str):
        dbcs = [dbcs]
    if not isinstance(dbcs, list):
        raise RulesConfigError(f"{where}: dbc: must be a list of paths")
    hooks = []
    raw_hooks = doc.get("webhooks", [])
    if not isinstance(raw_hooks, list):
        raise RulesConfigError(f"{where}: webhooks: must be an array of tables ([[webhooks]])")
    for i, h in enumerate(raw_hooks):
        at = f"{where}: webhooks[{i}]"
        if not isinstance(h, dict) or not isinstance(h.get("name"), str) or not isinstance(h.get("url"), str):
            raise RulesConfigError(f"{at}: needs name and url strings")
        if not h["url"].startswith(("http://", "https://")):
            raise RulesConfigError(f"{at}.url: must be an http:// or https:// URL")
        extra = set(h) - {"name", "url", "token_file", "max_queue", "timeout_s"}
        if extra:
            raise RulesConfigError(f"{at}.{sorted(extra)[0]}: unknown key")
        token = None
        if "token_file" in h:
            try:
                token = rel(h["token_file"], "token_file").read_text().strip()
            except OSError as exc:
                raise RulesConfigError(f"{at}.token_file: cannot read: {exc.strerror or exc}") from None
            if not token:
                raise RulesConfigError(f"{at}.token_file: is empty")
        hooks.append(Webhook(h["name"], h["url"], token, _int(h, "max_queue", 10_000, 1, at),
                             float(h.get("timeout_s", 5.0))))
    if len({h.name for h in hooks}) != len(hooks):
        raise RulesConfigError(f"{where}: webhooks: names must be unique")
    lake, secret = doc.get("lake"), None
    if lake is not None:
        if not isinstance(lake, str) or not lake:
            raise RulesConfigError(f"{where}: lake: must be a folder or a pyarrow.fs URI")
        if "://" not in lake:
            lake = str(rel(lake, "lake"))
        if "secret_file" not in doc:
            raise RulesConfigError(f"{where}: secret_file: required with lake (the vehicle-id masking key)")
        try:
            secret = rel(doc["secret_file"], "secret_file").read_bytes().strip()
        except OSError as exc:
            raise RulesConfigError(f"{where}: secret_file: cannot read: {exc.strerror or exc}") from None
        if len(secret) < 8:
            raise RulesConfigError(f"{where}: secret_file: the masking key must be at least 8 bytes")
    interval = doc.get("lake_interval_s", 300.0)
    if not isinstance(interval, (int, float)) or isinstance(interval, bool) or interval <= 0:
        raise RulesConfigError(f"{where}: lake_interval_s: must be a positive number")
    allow = doc.get("allow_plaintext", False)
    if not isinstance(allow, bool):
        raise RulesConfigError(f"{where}: allow_plaintext: must be true or false")
    refused = plaintext_refused(broker, allow)
    if refused:
        raise RulesConfigError(f"{where}: broker: {refused}")
    for i, h in enumerate(hooks):
        host = urlsplit(h.url).hostname or ""
        if h.url.startswith("http://") and not allow and not is_loopback(host):
            raise RulesConfigError(f"{where}: webhooks[{i}].url: plaintext http:// to {host} beyond loopback: use"
                                   " https://, or set allow_plaintext = true to choose plaintext explicitly")
    return ServiceConfig(
        lake=lake, vehicle_secret=secret, lake_interval_s=float(interval),
        broker=broker, state_path=rel(doc["state"], "state"), topic_prefix=prefix, worker=worker, workers=workers,
        client_id=str(doc.get("client_id", "")), rules_path=rel(doc["rules"], "rules") if "rules" in doc else None,
        dbc_paths=tuple(rel(p, "dbc") for p in dbcs), history=_int(doc, "history", 120, 1, where),
        batch=_int(doc, "batch", 200, 1, where), queue_size=_int(doc, "queue_size", 1000, 1, where),
        dedupe_days=float(doc.get("dedupe_days", 30.0)), mqtt_max_queue=_int(doc, "mqtt_max_queue", 100_000, 1, where),
        ca_file=rel(doc["ca_file"], "ca_file") if "ca_file" in doc else None, webhooks=tuple(hooks))
