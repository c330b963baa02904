"""Batch-layer parameters: trip segmentation, harsh-event thresholds and score weights.

One TOML file (``[trips]``, ``[harsh]``, ``[score]`` with ``[score.kind_weights]`` and
``[score.severity_weights]``) read by :func:`load_config` into a frozen, validated
:class:`BatchConfig`; every key is optional and defaults to the values documented (with their
sources) in ``docs/batch-layer.md``. An unknown key, a wrong type or a value out of range raises
:class:`~batch_layer.errors.BatchConfigError` naming the key.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dcm_base.config import load_toml

from .errors import BatchConfigError

KINDS = ("harsh_brake", "rapid_accel", "sharp_turn")
SEVERITIES = ("light", "moderate", "severe")


@dataclasses.dataclass(frozen=True)
class TripParams:
    """Traccar-like trip parameters (Traccar's defaults: 500 m, 300 s, 300 s, 3600 s)."""

    min_trip_distance_m: float = 500.0
    min_trip_duration_s: int = 300
    min_stop_duration_s: int = 300
    max_gap_s: int = 3600
    motion_speed_kmh: float = 2.0  # motion-driven trips: moving at or above this
    idle_speed_kmh: float = 2.0  # trip seconds below this are idle
    speed_limit_kmh: float = 130.0  # no map-matched limits yet: one limit for every road
    use_ignition: bool = True  # ignition-driven where the vehicle sends IgnitionState/EngineState


@dataclasses.dataclass(frozen=True)
class HarshParams:
    """Harsh-event thresholds in m/s^2 as (light, moderate, severe), from 1 Hz data."""

    gate_kmh: float = 20.0
    harsh_brake: tuple[float, float, float] = (3.0, 5.0, 6.5)
    rapid_accel: tuple[float, float, float] = (2.5, 3.5, 4.25)
    sharp_turn: tuple[float, float, float] = (3.0, 4.5, 5.5)

    def thresholds(self, kind: str) -> tuple[float, float, float]:
        return getattr(self, kind)


@dataclasses.dataclass(frozen=True)
class ScoreParams:
    """Driver score weights: Samsara's published score with severity weights and credibility."""

    per_km: float = 1000.0
    kind_weights: Mapping[str, float] = dataclasses.field(
        default_factory=lambda: {"harsh_brake": 1.0, "rapid_accel": 1.0, "sharp_turn": 1.0})
    severity_weights: Mapping[str, float] = dataclasses.field(
        default_factory=lambda: {"light": 0.05, "moderate": 1.0, "severe": 2.0})
    speeding_weight: float = 1.0  # points per percent of moving time above the limit
    credibility_km: float = 50.0  # pseudo-distance of prior driving added to every exposure
    prior_points: float = 5.0  # event points per per_km of that prior driving
    credibility_s: float = 600.0  # pseudo-time of prior driving for the speeding share
    prior_speeding_share: float = 0.01

    def weight(self, kind: str, severity: str) -> float:
        return self.kind_weights[kind] * self.severity_weights[severity]


@dataclasses.dataclass(frozen=True)
class BatchConfig:
    trips: TripParams = TripParams()
    harsh: HarshParams = HarshParams()
    score: ScoreParams = ScoreParams()

    def digest(self) -> str:
        """A hash of every parameter: materialised views computed with other parameters are stale."""
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True, default=dict)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _number(key: str, value: Any, lo: float = 0.0, hi: float = math.inf, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise BatchConfigError(f"{key}: must be {'an integer' if integer else 'a number'}, got {value!r}")
    if not (lo <= value <= hi) or math.isnan(value):
        raise BatchConfigError(f"{key}: must be between {lo} and {hi}, got {value!r}")
    return value


def _fields(cls: type, section: str, raw: Any) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise BatchConfigError(f"[{section}]: must be a table")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise BatchConfigError(f"{section}.{unknown[0]}: unknown key")
    return dict(raw)


def _trips(raw: Any) -> TripParams:
    d = _fields(TripParams, "trips", raw)
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"trips.{k}"
        if k == "use_ignition":
            if not isinstance(v, bool):
                raise BatchConfigError(f"{key}: must be true or false")
            out[k] = v
        elif k.endswith("_s"):
            out[k] = int(_number(key, v, 0 if k != "max_gap_s" else 1, 10 * 86400, integer=True))
        else:
            out[k] = float(_number(key, v, 0.0, 1e6))
    return TripParams(**out)


def _harsh(raw: Any) -> HarshParams:
    d = _fields(HarshParams, "harsh", raw)
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"harsh.{k}"
        if k == "gate_kmh":
            out[k] = float(_number(key, v, 0.0, 300.0))
            continue
        if not isinstance(v, list) or len(v) != 3:
            raise BatchConfigError(f"{key}: must be [light, moderate, severe] in m/s^2")
        t = tuple(float(_number(key, x, 0.1, 100.0)) for x in v)
        if not t[0] < t[1] < t[2]:
            raise BatchConfigError(f"{key}: thresholds must increase: light < moderate < severe")
        out[k] = t
    return HarshParams(**out)


def _weights(key: str, raw: Any, names: tuple[str, ...], default: Mapping[str, float]) -> dict[str, float]:
    if not isinstance(raw, Mapping):
        raise BatchConfigError(f"{key}: must be a table")
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise BatchConfigError(f"{key}.{unknown[0]}: unknown key (one of {', '.join(names)})")
    out = dict(default)
    out.update({k: float(_number(f"{key}.{k}", v, 0.0, 1000.0)) for k, v in raw.items()})
    return out


def _score(raw: Any) -> ScoreParams:
    d = _fields(ScoreParams, "score", raw)
    base = ScoreParams()
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"score.{k}"
        if k == "kind_weights":
            out[k] = _weights(key, v, KINDS, base.kind_weights)
        elif k == "severity_weights":
            out[k] = _weights(key, v, SEVERITIES, base.severity_weights)
        elif k == "per_km":
            out[k] = float(_number(key, v, 1.0, 1e6))
        elif k == "prior_speeding_share":
            out[k] = float(_number(key, v, 0.0, 1.0))
        else:
            out[k] = float(_number(key, v, 0.0, 1e6))
    return ScoreParams(**out)


def config_from_dict(doc: Mapping[str, Any]) -> BatchConfig:
    """Validate a parsed TOML document (or any mapping of the same shape)."""
    unknown = sorted(set(doc) - {"trips", "harsh", "score"})
    if unknown:
        raise BatchConfigError(f"{unknown[0]}: unknown section (trips, harsh, score)")
    return BatchConfig(trips=_trips(doc.get("trips", {})), harsh=_harsh(doc.get("harsh", {})),
                       score=_score(doc.get("score", {})))


def load_config(path: Path | None) -> BatchConfig:
    """Read a batch-layer TOML file; ``None`` gives the defaults."""
    if path is None:
        return BatchConfig()
    doc = load_toml(path, BatchConfigError)
    try:
        return config_from_dict(doc)
    except BatchConfigError as exc:
        raise BatchConfigError(f"{path}: {exc}") from None
