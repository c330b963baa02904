"""The rules file: one TOML per deployment to a frozen, validated :class:`RulesConfig`.

Example ``rules.toml``::

    builtins = true            # every built-in rule with its defaults unless listed and disabled
    hold_s = 30                # a signal's last value stands in for missing seconds this long

    [signals]                  # logical signal -> column, for every rule (reference car by default)
    lights = "HeadlightSwitch"

    geofences_file = "geofences.geojson"  # optional: more fences, written by the fleet API (below)

    [geofences.depot]          # exactly one of circle, wkt, geojson (coordinates lon, lat)
    circle = { lat = 48.137, lon = 11.575, radius_m = 500 }
    hysteresis_m = 25
    speed_limit_kmh = 30       # also a speeding limit inside the fence

    [rules.headlights_left_on] # a built-in: the table name is its type
    minutes = 5

    [rules.speeding]
    limit_kmh = 130
    vehicles = { VIN123 = 100 }  # per-vehicle limits

    [rules.coolant_hot]        # any other name: give the type
    type = "condition"
    condition = "EngineCoolantTemp > 110 for 60 s"
    peak = "EngineCoolantTemp"

    [rules.harsh_cornering]
    enabled = false

``geofences_file`` (relative to the rules file's folder) is a GeoJSON FeatureCollection whose
features carry ``properties.name`` and optionally ``hysteresis_m`` and ``speed_limit_kmh``: the
store ``dcm api`` writes with ``PUT /api/v1/geofences/{name}``. A missing file holds no fences; its
fences join the inline ones (a name may not be in both).

Every error names the file and the key (``rules.toml: rules.speeding.limit_kmh: must be ...``).
A condition rule reads columns by their own names; ``signals = { ... }`` in a rule's table maps
its logical names.
"""
from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .catalog import BUILTINS, REFERENCE_COLUMNS, TYPES, make_rule
from .errors import RulesConfigError
from .geo import Fence, fence_from_config
from .rules import Rule

DEFAULT_HOLD_S = 30
_TOP_KEYS = {"builtins", "hold_s", "signals", "geofences", "geofences_file", "rules"}
_RULE_META = {"type", "enabled", "signals"}


@dataclasses.dataclass(frozen=True)
class RulesConfig:
    """Rules ready to bind to vehicles, the fences they use, and the hold time of sparse signals."""

    rules: tuple[Rule, ...]
    fences: tuple[Fence, ...] = ()
    hold_s: int = DEFAULT_HOLD_S
    source: str = ""
    geofences_file: Path | None = None  # the fence store the rules file names (watched by rule workers)

    def __post_init__(self) -> None:
        names = [r.name for r in self.rules]
        if len(set(names)) != len(names):
            raise RulesConfigError(f"{self.source or 'rules'}: rule names must be unique")


def _signal_map(raw: Any, where: str) -> dict[str, str]:
    if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str) and v for k, v in raw.items()):
        raise RulesConfigError(f"{where}: must be a table of logical signal = column name")
    return dict(raw)


def load_rules(path: str | Path | None = None, *, text: str | None = None) -> RulesConfig:
    """Load a rules file (or ``text``); no file and no text gives the built-ins with defaults."""
    where = str(path) if path is not None else "<rules>"
    if text is None and path is not None:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise RulesConfigError(f"{where}: cannot read: {exc.strerror or exc}") from None
    try:
        doc = tomllib.loads(text or "")
    except tomllib.TOMLDecodeError as exc:
        raise RulesConfigError(f"{where}: not valid TOML: {exc}") from None
    return rules_from_mapping(doc, where, Path(path).parent if path is not None else None)


def geofences_from_file(path: Path, where: str) -> dict[str, dict[str, Any]]:
    """``[geofences.<name>]``-shaped tables from a GeoJSON FeatureCollection file (none if absent)."""
    import json

    if not path.exists():
        return {}
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RulesConfigError(f"{where}: cannot read {path}: {exc}") from None
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection" or not isinstance(doc.get("features"), list):
        raise RulesConfigError(f"{where}: {path} is not a GeoJSON FeatureCollection")
    out: dict[str, dict[str, Any]] = {}
    for i, f in enumerate(doc["features"]):
        props = f.get("properties") if isinstance(f, dict) else None
        name = props.get("name") if isinstance(props, dict) else None
        if not isinstance(name, str) or not name:
            raise RulesConfigError(f"{where}: {path}: features[{i}].properties.name: missing")
        out[name] = {"geojson": f.get("geometry") or {},
                     **{k: props[k] for k in ("hysteresis_m", "speed_limit_kmh") if props.get(k) is not None}}
    return out


def rules_from_mapping(doc: Mapping[str, Any], where: str = "<rules>", base: Path | None = None) -> RulesConfig:
    unknown = set(doc) - _TOP_KEYS
    if unknown:
        raise RulesConfigError(f"{where}: {sorted(unknown)[0]}: unknown key (known: {', '.join(sorted(_TOP_KEYS))})")
    builtins = doc.get("builtins", True)
    if not isinstance(builtins, bool):
        raise RulesConfigError(f"{where}: builtins: must be true or false")
    hold_s = doc.get("hold_s", DEFAULT_HOLD_S)
    if not isinstance(hold_s, int) or isinstance(hold_s, bool) or not 0 <= hold_s <= 3600:
        raise RulesConfigError(f"{where}: hold_s: must be an integer of seconds in 0..3600")
    columns = dict(REFERENCE_COLUMNS)
    columns.update(_signal_map(doc.get("signals", {}), f"{where}: signals"))
    raw_fences = doc.get("geofences", {})
    if not isinstance(raw_fences, dict):
        raise RulesConfigError(f"{where}: geofences: must be a table of fences")
    gpath: Path | None = None
    if "geofences_file" in doc:
        gf = doc["geofences_file"]
        if not isinstance(gf, str) or not gf:
            raise RulesConfigError(f"{where}: geofences_file: must be a path")
        gpath = Path(gf) if Path(gf).is_absolute() or base is None else base / gf
        stored = geofences_from_file(gpath, f"{where}: geofences_file")
        both = sorted(set(stored) & set(raw_fences))
        if both:
            raise RulesConfigError(f"{where}: geofences_file: fence {both[0]!r} is also in [geofences]")
        raw_fences = {**raw_fences, **stored}
    fences = []
    for name, raw in raw_fences.items():
        if not isinstance(raw, dict):
            raise RulesConfigError(f"{where}: geofences.{name}: must be a table")
        fences.append(fence_from_config(name, raw, f"{where}: geofences.{name}"))
    raw_rules = doc.get("rules", {})
    if not isinstance(raw_rules, dict):
        raise RulesConfigError(f"{where}: rules: must be a table of rules")
    tables: dict[str, dict[str, Any]] = {name: {} for name in BUILTINS} if builtins else {}
    for name, raw in raw_rules.items():
        if not isinstance(raw, dict):
            raise RulesConfigError(f"{where}: rules.{name}: must be a table")
        tables[name] = raw
    rules = []
    for name, raw in tables.items():
        at = f"{where}: rules.{name}"
        type_ = raw.get("type", name)
        if not isinstance(type_, str) or type_ not in TYPES:
            raise RulesConfigError(f"{at}.type: unknown rule type {type_!r} (known: {', '.join(TYPES)})")
        enabled = raw.get("enabled", True)
        if not isinstance(enabled, bool):
            raise RulesConfigError(f"{at}.enabled: must be true or false")
        if not enabled:
            continue
        own = _signal_map(raw.get("signals", {}), f"{at}.signals")
        rule_columns = own if type_ == "condition" else {**columns, **own}
        params = {k: v for k, v in raw.items() if k not in _RULE_META}
        rule = make_rule(name, type_, params, rule_columns, fences, at)
        if rule is not None:
            rules.append(rule)
    return RulesConfig(tuple(rules), tuple(fences), hold_s, where, gpath)
