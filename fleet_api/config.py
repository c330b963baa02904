"""The API's configuration: one TOML file to a frozen, validated :class:`ApiConfig`, read by the
project's one loader (:func:`dcm_base.config.load_fields`).

Example ``api.toml`` (relative paths are relative to the file's folder)::

    listen = "127.0.0.1:8480"          # host:port; behind a TLS proxy, or give tls_cert + tls_key
    tokens = "api-tokens.sqlite"       # hashed bearer tokens (dcm api token create|list|revoke)
    secret_file = "key.bin"            # the sink's vehicle-masking key (alerts, operational tables)
    tile_url = ""                      # e.g. "https://tiles.example/{z}/{x}/{y}.png"; empty: plain background
    offline_after_s = 900              # no data for this long: offline
    moving_kmh = 2.0                   # latest speed at or above this (and recent): moving
    max_points = 2000                  # series and routes are downsampled to at most this many points
    series_cache_mb = 256              # vehicles' columns kept in memory for series (least recently used evicted)
    tls_cert = "api.crt"               # optional, both or neither
    tls_key = "api.key"

    [sources]
    lake = "lake"                      # the sink's lake root (folder or file:// URI)
    sink_state = ["sink/state.sqlite"] # the sink workers' state databases (latest state)
    alerts = ["rules-0.sqlite"]        # the rule workers' stores (speed layer)
    rules = "rules.toml"               # the deployment's rules; its geofences_file is the fence store
    batch_config = "batch.toml"        # batch-layer parameters (optional)
    batch_views = "views"              # materialised batch views (optional; else computed from the lake)
    operational = "csv:ops"            # operational tables (optional): csv:<folder> or a database
    views_refresh_s = 300              # how often the views are recomputed when the lake changed

    [oidc]                             # optional: JWTs of an external OIDC issuer (fleet_api.oidc)
    issuer = "https://login.example"   # the JWT's iss
    audience = "dcm-api"               # the JWT's aud
    jwks_url = "https://login.example/keys"   # default <issuer>/.well-known/jwks.json
    scopes_claim = "dcm_scopes"        # the claim holding the API's scopes

    [rate_limit]                       # per token: a token bucket
    per_s = 20
    burst = 40
    max_tokens = 10000                 # tokens tracked at once; the least recently seen is dropped (counted)

Every error reads ``<file>: <key>: <problem>`` (:class:`~fleet_api.errors.ApiConfigError`).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dcm_base.broker_url import is_loopback
from dcm_base.config import Key, load_fields, number, path, path_or_uri, paths, string, where
from dcm_base.errors import ConfigError

from .errors import ApiConfigError
from .oidc import OidcConfig


@dataclasses.dataclass(frozen=True)
class RateLimit:
    per_s: float = 20.0
    burst: float = 40.0
    max_tokens: int = 10_000


@dataclasses.dataclass(frozen=True)
class ApiConfig:
    tokens_path: Path
    host: str = "127.0.0.1"
    port: int = 8480
    secret: bytes = dataclasses.field(default=b"", repr=False)
    tile_url: str = ""
    offline_after_s: float = 900.0
    moving_kmh: float = 2.0
    max_points: int = 2000
    series_cache_mb: int = 256
    tls_cert: Path | None = None
    tls_key: Path | None = None
    lake: str | None = None
    sink_state: tuple[Path, ...] = ()
    alerts: tuple[Path, ...] = ()
    rules: Path | None = None
    batch_config: Path | None = None
    batch_views: Path | None = None
    operational: str | None = None
    views_refresh_s: float = 300.0
    rate_limit: RateLimit = RateLimit()
    oidc: OidcConfig | None = None  # JWTs of an external issuer, beside the API's own tokens
    source: str = "<config>"


def listen(v: Any) -> tuple[str, int]:
    """``host:port`` (port 0: any free port)."""
    host, _, port = string(v).rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"must be host:port, got {v!r}")
    return host.strip("[]"), int(port)


def _tile_url(v: Any) -> str:
    if not isinstance(v, str) or (v and not (v.startswith(("http://", "https://", "/")) and "{z}" in v)):
        raise ValueError("must be an http(s) URL with {z}/{x}/{y}, or empty")
    return v


def _https(v: Any) -> str:
    v = string(v)
    if not (v.startswith("https://") or (v.startswith("http://") and is_loopback(urlsplit(v).hostname or ""))):
        raise ValueError("must be an https:// URL (plain http only on loopback)")
    return v.rstrip("/")


def _operational(v: Any) -> str:
    v = string(v)
    if not (v.startswith("csv:") or ":" in v or v.endswith((".duckdb", ".db", ".sqlite"))):
        raise ValueError("must be csv:<folder>, a DuckDB file or <kind>:<database> (sqlite:, postgres:)")
    return v


KEYS: dict[str, Key] = {
    "listen": Key("listen", listen),
    "tokens": Key("tokens_path", path, path=True),
    "secret_file": Key("secret_file", path, path=True),
    "tile_url": Key("tile_url", _tile_url),
    "offline_after_s": Key("offline_after_s", number(float, low=1)),
    "moving_kmh": Key("moving_kmh", number(float, low=0)),
    "max_points": Key("max_points", number(int, low=10, high=100_000)),
    "series_cache_mb": Key("series_cache_mb", number(int, low=0, high=1_000_000)),
    "tls_cert": Key("tls_cert", path, path=True),
    "tls_key": Key("tls_key", path, path=True),
    "sources.lake": Key("lake", path_or_uri, path=True),
    "sources.sink_state": Key("sink_state", paths, path=True),
    "sources.alerts": Key("alerts", paths, path=True),
    "sources.rules": Key("rules", path, path=True),
    "sources.batch_config": Key("batch_config", path, path=True),
    "sources.batch_views": Key("batch_views", path, path=True),
    "sources.operational": Key("operational", _operational),
    "sources.views_refresh_s": Key("views_refresh_s", number(float, low=1)),
    "rate_limit.per_s": Key("per_s", number(float, low=0.001)),
    "rate_limit.burst": Key("burst", number(float, low=1)),
    "rate_limit.max_tokens": Key("max_tokens", number(int, low=1)),
    "oidc.issuer": Key("oidc_issuer", _https),
    "oidc.audience": Key("oidc_audience", string),
    "oidc.jwks_url": Key("oidc_jwks_url", _https),
    "oidc.scopes_claim": Key("oidc_scopes_claim", string),
}


def load_config(file: str | Path | None, overrides: Mapping[str, Any] | None = None) -> ApiConfig:
    """Read and validate an API TOML file; ``overrides`` use the same dotted keys (``listen``)."""
    p = Path(file) if file is not None else None
    origin = where(p)
    try:
        f = load_fields(p, KEYS, overrides, required=("tokens",))
    except ConfigError as exc:
        raise ApiConfigError(str(exc)) from None
    base = p.parent if p is not None else Path.cwd()
    out: dict[str, Any] = {"tokens_path": f["tokens_path"], "source": origin}
    if "listen" in f:
        out["host"], out["port"] = f["listen"]
    if "secret_file" in f:
        try:
            secret = f["secret_file"].read_bytes().strip()
        except OSError as exc:
            raise ApiConfigError(f"{origin}: secret_file: cannot read {f['secret_file']}: {exc.strerror or exc}") from None
        if len(secret) < 8:
            raise ApiConfigError(f"{origin}: secret_file: {f['secret_file']} holds fewer than 8 bytes")
        out["secret"] = secret
    if ("tls_cert" in f) != ("tls_key" in f):
        raise ApiConfigError(f"{origin}: {'tls_key' if 'tls_cert' in f else 'tls_cert'}: required with the other")
    for key in ("tls_cert", "tls_key"):
        if key in f:
            if not f[key].is_file():
                raise ApiConfigError(f"{origin}: {key}: no such file {f[key]}")
            out[key] = f[key]
    if "lake" in f:
        out["lake"] = str(f["lake"])
    if "operational" in f:
        v = f["operational"]
        if v.startswith("csv:") and not Path(v[4:]).is_absolute():
            v = f"csv:{base / v[4:]}"
        elif ":" not in v and not Path(v).is_absolute():
            v = str(base / v)
        out["operational"] = v
    for key in ("tile_url", "offline_after_s", "moving_kmh", "max_points", "series_cache_mb", "sink_state", "alerts",
                "rules", "batch_config", "batch_views", "views_refresh_s"):
        if key in f:
            out[key] = f[key]
    for key in ("alerts", "operational"):
        if out.get(key) and not out.get("secret"):
            raise ApiConfigError(f"{origin}: secret_file: required with sources.{key} (vehicles are joined masked)")
    oidc_keys = [k for k in ("oidc_issuer", "oidc_audience", "oidc_jwks_url", "oidc_scopes_claim") if k in f]
    if oidc_keys:
        for need in ("oidc_issuer", "oidc_audience"):
            if need not in f:
                raise ApiConfigError(f"{origin}: oidc.{need[5:]}: required with [oidc]")
        out["oidc"] = OidcConfig(f["oidc_issuer"], f["oidc_audience"],
                                 f.get("oidc_jwks_url") or f"{f['oidc_issuer']}/.well-known/jwks.json",
                                 f.get("oidc_scopes_claim", "dcm_scopes"))
    base_rl = RateLimit()
    out["rate_limit"] = RateLimit(f.get("per_s", base_rl.per_s), f.get("burst", base_rl.burst),
                                  f.get("max_tokens", base_rl.max_tokens))
    return ApiConfig(**out)
