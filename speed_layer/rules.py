"""The pure core of the rules engine: a rule is a small state machine over 1 Hz rows.

A :class:`Rule` names the signals it reads (logical names, each mapped to a schema column by the
configuration) and is *bound* to one vehicle (:meth:`Rule.bind`), giving a :class:`Stepper`
whose ``step_row(state, t, values)`` updates a JSON-serialisable state dict in place and returns
:class:`AlertChange` objects. :func:`step` is the functional form ``(state, rows) -> (state,
changes)`` tests call directly. No rule does I/O or reads a clock: time is the row's second.

An alert belongs to an *episode*: its id is derived from the vehicle, the rule's name and the
episode key (usually the episode's first second), so however often and in whatever order the
rows are replayed, the same episode yields the same alert id.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from minute_packet.condition_eval import Evaluator, compile_condition

OPEN, CLOSED = "open", "closed"
MAX_GAP_S = 10  # a longer silence ends an open episode at its last row


@dataclasses.dataclass(frozen=True)
class AlertChange:
    """An alert opened or closed (or updated) by a rule; ``details`` is JSON-serialisable."""

    rule: str
    kind: str
    episode: str
    status: str
    start: int
    end: int | None
    details: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def record(self, vehicle: str) -> dict[str, Any]:
        """The stored and published form of this alert."""
        return {"id": alert_id(vehicle, self.rule, self.episode), "vehicle": vehicle, "rule": self.rule,
                "kind": self.kind, "episode": self.episode, "status": self.status, "start": self.start,
                "end": self.end, "details": dict(self.details)}


def alert_id(vehicle: str, rule: str, episode: str) -> str:
    """Deterministic alert id: the first 16 bytes of SHA-256 over vehicle, rule and episode, hex."""
    return hashlib.sha256(f"{vehicle}\x00{rule}\x00{episode}".encode()).hexdigest()[:32]


class Stepper(Protocol):
    def step_row(self, state: dict[str, Any], t: int, values: Mapping[str, float]) -> list[AlertChange]: ...


class Rule:
    """Base of every rule: a name, a kind, and the schema column behind each logical signal."""

    kind = "rule"
    required: tuple[str, ...] = ()  # logical signals the rule cannot work without
    optional: tuple[str, ...] = ()  # used when the schema has them

    def __init__(self, name: str, columns: Mapping[str, str]) -> None:
        self.name = name
        self.columns = dict(columns)  # logical name -> schema column name

    vehicles: frozenset[str] | None = None  # only these vehicles (None: every vehicle)

    def applies_to(self, vehicle: str) -> bool:
        return self.vehicles is None or vehicle in self.vehicles

    def missing(self, available: Iterable[str]) -> list[str]:
        """Required columns the schema lacks (the rule is skipped for such a vehicle)."""
        have = set(available)
        return sorted(self.columns[s] for s in self.required if self.columns[s] not in have)

    def bind(self, vehicle: str, choices: Mapping[str, Mapping[int, str] | None]) -> Stepper:
        """The state machine for one vehicle; ``choices`` maps logical names to value tables."""
        raise NotImplementedError


def step(stepper: Stepper, state: Mapping[str, Any] | None, rows: Iterable[tuple[int, Mapping[str, float]]]
         ) -> tuple[dict[str, Any], list[AlertChange]]:
    """Run ``rows`` (``(t, values)``) through a bound rule: the new state and every alert change."""
    new = copy.deepcopy(dict(state or {}))
    changes: list[AlertChange] = []
    for t, values in rows:
        changes.extend(stepper.step_row(new, t, values))
    return new, changes


class Episodes:
    """Open/close bookkeeping shared by episode rules: one episode at a time under ``state['ep']``."""

    def __init__(self, rule: str, kind: str, peak: str | None = None, max_gap_s: float = MAX_GAP_S) -> None:
        self.rule, self.kind, self.peak, self.max_gap_s = rule, kind, peak, max_gap_s

    def _change(self, ep: dict[str, Any], status: str) -> AlertChange:
        details = {k: v for k, v in ep.items() if k not in ("start", "last")}
        return AlertChange(self.rule, self.kind, str(ep["start"]), status, ep["start"],
                           ep["last"] if status == CLOSED else None, details)

    def expire(self, state: dict[str, Any], t: int) -> list[AlertChange]:
        """Close the open episode when the data stopped for longer than ``max_gap_s``."""
        ep = state.get("ep")
        if ep is not None and t - ep["last"] > self.max_gap_s:
            del state["ep"]
            return [self._change(ep, CLOSED)]
        return []

    def update(self, state: dict[str, Any], t: int, on: bool, start: int | None = None,
               peak_value: float | None = None) -> list[AlertChange]:
        """Feed whether the episode condition holds at ``t``; ``start`` is its first second."""
        out = self.expire(state, t)
        ep = state.get("ep")
        if on:
            if ep is None:
                ep = state["ep"] = {"start": start if start is not None else t, "last": t}
                if self.peak and peak_value is not None:
                    ep[self.peak] = peak_value
                out.append(self._change(ep, OPEN))
            else:
                ep["last"] = t
                if self.peak and peak_value is not None:
                    ep[self.peak] = max(ep.get(self.peak, peak_value), peak_value)
        elif ep is not None:
            del state["ep"]
            out.append(self._change(ep, CLOSED))
        return out


class ConditionRule(Rule):
    """An episode for as long as a condition holds (the generic rule, and several built-ins).

    The episode starts at the first second of the condition's run (for ``x for N s``: the second
    ``x`` became true, not the N-th), so the alert id does not depend on the debounce."""

    kind = "condition"

    def __init__(self, name: str, condition: str, columns: Mapping[str, str], *, kind: str | None = None,
                 peak: str | None = None, details: tuple[str, ...] = ()) -> None:
        super().__init__(name, columns)
        from minute_packet.condition import parse, signals
        self.condition = condition
        self.node = parse(condition)
        self.required = tuple(sorted(signals(self.node)))
        for s in self.required:
            self.columns.setdefault(s, s)  # a generic rule names columns directly
        self.peak = peak  # logical signal whose maximum over the episode goes into the details
        self.details_signals = details
        self.optional = tuple(s for s in (peak, *details) if s and s not in self.required)
        for s in self.optional:
            self.columns.setdefault(s, s)
        if kind:
            self.kind = kind

    def bind(self, vehicle: str, choices: Mapping[str, Mapping[int, str] | None]) -> Stepper:
        return _ConditionStepper(self, compile_condition(self.condition, choices))


class _ConditionStepper:
    def __init__(self, rule: ConditionRule, ev: Evaluator) -> None:
        self.rule, self.ev = rule, ev
        self.episodes = Episodes(rule.name, rule.kind, "peak" if rule.peak else None)

    def step_row(self, state: dict[str, Any], t: int, values: Mapping[str, float]) -> list[AlertChange]:
        cstate = state.setdefault("c", {})
        on = self.ev(cstate, t, values)
        peak = values.get(self.rule.peak) if self.rule.peak else None
        out = self.episodes.update(state, t, on, self.ev.since(cstate), peak)
        ep = state.get("ep")
        if ep is not None:
            for s in self.rule.details_signals:
                if s in values and s not in ep:
                    ep[s] = values[s]
        return out
