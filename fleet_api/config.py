"""The API's configuration: one TOML file to a frozen, validated :class:`ApiConfig`.

Example ``api.toml`` (relative paths are relative to the file's folder)::

    listen = "127.0.0.1:8480"          # host:port; behind a TLS proxy, or give tls_cert + tls_key
    tokens = "api-tokens.sqlite"       # hashed bearer tokens (dcm api token create|list|revoke)
    secret_file = "key.bin"            # the sink's vehicle-masking key (joins the operational tables)
    tile_url = ""                      # e.g. "https://tiles.example/{z}/{x}/{y}.png"; empty: plain background
    offline_after_s = 900              # no data for this long: offline
    moving_kmh = 2.0                   # latest speed at or above this (and recent): moving
    max_points = 2000                  # series and routes are downsampled to at most this many points
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

    [rate_limit]                       # per token: a token bucket
    per_s = 20
    burst = 40
    max_tokens = 10000                 # tokens tracked at once; the least recently seen is dropped (counted)

Every error reads ``<file>: <key>: <problem>``.
"""
from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import ApiConfigError


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
    source: str = "<config>"


_TOP = {"listen", "tokens", "secret_file", "tile_url", "offline_after_s", "moving_kmh", "max_points", "tls_cert",
        "tls_key", "sources", "rate_limit"}
_SOURCES = {"lake", "sink_state", "alerts", "rules", "batch_config", "batch_views", "operational", "views_refresh_s"}
_RATE = {"per_s", "burst", "max_tokens"}


def _number(where: str, key: str, v: Any, lo: float, integer: bool = False) -> Any:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)) or v < lo:
        raise ApiConfigError(f"{where}: {key}: must be {'an integer' if integer else 'a number'} >= {lo:g}, got {v!r}")
    return v


def _listen(where: str, v: Any) -> tuple[str, int]:
    if not isinstance(v, str) or ":" not in v:
        raise ApiConfigError(f"{where}: listen: must be host:port, got {v!r}")
    host, _, port = v.rpartition(":")
    if not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
        raise ApiConfigError(f"{where}: listen: must be host:port, got {v!r}")
    return host.strip("[]"), int(port)


def config_from_mapping(doc: Mapping[str, Any], where: str = "<config>", base: Path | None = None) -> ApiConfig:
    """Validate a parsed document; relative paths are taken against ``base``."""
    base = base or Path.cwd()

    def unknown(table: Mapping[str, Any], known: set[str], prefix: str) -> None:
        extra = sorted(set(table) - known)
        if extra:
            raise ApiConfigError(f"{where}: {prefix}{extra[0]}: unknown key")

    def path(key: str, v: Any) -> Path:
        if not isinstance(v, str) or not v:
            raise ApiConfigError(f"{where}: {key}: must be a path")
        p = Path(v)
        return p if p.is_absolute() else base / p

    def paths(key: str, v: Any) -> tuple[Path, ...]:
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list):
            raise ApiConfigError(f"{where}: {key}: must be a list of paths")
        return tuple(path(key, x) for x in v)

    unknown(doc, _TOP, "")
    if "tokens" not in doc:
        raise ApiConfigError(f"{where}: tokens: required (the token database, e.g. \"api-tokens.sqlite\")")
    out: dict[str, Any] = {"tokens_path": path("tokens", doc["tokens"]), "source": where}
    if "listen" in doc:
        out["host"], out["port"] = _listen(where, doc["listen"])
    if "secret_file" in doc:
        sf = path("secret_file", doc["secret_file"])
        try:
            secret = sf.read_bytes().strip()
        except OSError as exc:
            raise ApiConfigError(f"{where}: secret_file: cannot read {sf}: {exc.strerror or exc}") from None
        if len(secret) < 8:
            raise ApiConfigError(f"{where}: secret_file: {sf} holds fewer than 8 bytes")
        out["secret"] = secret
    if "tile_url" in doc:
        t = doc["tile_url"]
        if not isinstance(t, str) or (t and not (t.startswith(("http://", "https://", "/")) and "{z}" in t)):
            raise ApiConfigError(f"{where}: tile_url: must be an http(s) URL with {{z}}/{{x}}/{{y}}, or empty")
        out["tile_url"] = t
    for key, lo, integer in (("offline_after_s", 1, False), ("moving_kmh", 0, False), ("max_points", 10, True)):
        if key in doc:
            out[key] = _number(where, key, doc[key], lo, integer)
    if ("tls_cert" in doc) != ("tls_key" in doc):
        raise ApiConfigError(f"{where}: {'tls_key' if 'tls_cert' in doc else 'tls_cert'}: required with the other")
    for key in ("tls_cert", "tls_key"):
        if key in doc:
            p = path(key, doc[key])
            if not p.is_file():
                raise ApiConfigError(f"{where}: {key}: no such file {p}")
            out[key] = p
    src = doc.get("sources", {})
    if not isinstance(src, dict):
        raise ApiConfigError(f"{where}: sources: must be a table")
    unknown(src, _SOURCES, "sources.")
    if "lake" in src:
        v = src["lake"]
        if not isinstance(v, str) or not v:
            raise ApiConfigError(f"{where}: sources.lake: must be a folder or URI")
        out["lake"] = v if "://" in v else str(path("sources.lake", v))
    for key in ("sink_state", "alerts"):
        if key in src:
            out[key] = paths(f"sources.{key}", src[key])
    for key in ("rules", "batch_config", "batch_views"):
        if key in src:
            out[key] = path(f"sources.{key}", src[key])
    if "operational" in src:
        v = src["operational"]
        if not isinstance(v, str) or not v:
            raise ApiConfigError(f"{where}: sources.operational: must be csv:<folder> or a database")
        if v.startswith("csv:") and not Path(v[4:]).is_absolute():
            v = f"csv:{base / v[4:]}"
        elif ":" not in v and not Path(v).is_absolute():
            v = str(base / v)
        out["operational"] = v
        if not out.get("secret"):
            raise ApiConfigError(f"{where}: secret_file: required with sources.operational (VINs are joined masked)")
    if out.get("alerts") and not out.get("secret"):
        raise ApiConfigError(f"{where}: secret_file: required with sources.alerts (alerts are keyed by raw ids)")
    if "views_refresh_s" in src:
        out["views_refresh_s"] = _number(where, "sources.views_refresh_s", src["views_refresh_s"], 1)
    rl = doc.get("rate_limit", {})
    if not isinstance(rl, dict):
        raise ApiConfigError(f"{where}: rate_limit: must be a table")
    unknown(rl, _RATE, "rate_limit.")
    out["rate_limit"] = RateLimit(
        float(_number(where, "rate_limit.per_s", rl.get("per_s", 20.0), 0.001)),
        float(_number(where, "rate_limit.burst", rl.get("burst", 40.0), 1)),
        int(_number(where, "rate_limit.max_tokens", rl.get("max_tokens", 10_000), 1, integer=True)))
    return ApiConfig(**out)


def load_config(path: str | Path) -> ApiConfig:
    """Read and validate an API TOML file."""
    p = Path(path)
    try:
        doc = tomllib.loads(p.read_text())
    except OSError as exc:
        raise ApiConfigError(f"{p}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ApiConfigError(f"{p}: not valid TOML: {exc}") from None
    return config_from_mapping(doc, str(p), p.parent)
