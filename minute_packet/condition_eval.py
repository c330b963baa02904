"""Evaluating a condition AST over 1 Hz rows, with its state kept in a JSON-serialisable dict.

Semantics, second by second (``t`` is the row's Unix second, ``values`` maps signal names to
physical values; a signal absent from ``values`` is unknown):

* a comparison with an unknown operand is false (and a hysteresis comparison forgets it was on);
* ``x for N s`` is true from the N-th consecutive second ``x`` holds: for 60 s it is false on
  seconds 1..59 and true on the 60th (each 1 Hz row stands for ``period_s`` = 1 s; on decoded
  frames, ``period_s = 0``, it is true once ``t`` is N s past the first frame where ``x`` held).
  A gap of more than ``max_gap_s`` seconds between rows (the vehicle stopped sending) starts the
  count again;
* ``rising(x)`` is true on a second where ``x`` is true and was false (or unknown) on the
  previous row; ``falling(x)`` the reverse;
* hysteresis: ``x > a hysteresis h`` turns on when ``x > a`` and stays on while ``x > a - h``
  (``<``: stays on while ``x < a + h``).

Every stateful node keeps its state under its own key in the state dict, so a checkpoint is
``json.dumps(state)`` and a replay resumes exactly.
"""
from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

from . import condition as c
from .condition import ConditionError

MAX_GAP_S = 10
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "==": operator.eq, "!=": operator.ne,
}

State = dict[str, Any]
_Fn = Callable[[State, float, Mapping[str, float]], bool]


class Evaluator:
    """A compiled condition. ``choices`` gives the value table of each signal (for ``"Off"``)."""

    def __init__(self, node: c.Node, choices: Mapping[str, Mapping[int, str] | None] | None = None, *,
                 text: str = "", max_gap_s: float = MAX_GAP_S, period_s: float = 1.0) -> None:
        self.node = node
        self.text = text
        self.signals = c.signals(node)
        self.max_gap_s = max_gap_s
        self.period_s = period_s
        self._choices = choices or {}
        self._count = 0
        self._fn = self._compile(node)
        self._top_for = f"n{self._count - 1}" if isinstance(node, c.For) else None

    def __call__(self, state: State, t: float, values: Mapping[str, float]) -> bool:
        """Evaluate on one row, updating ``state`` in place."""
        return self._fn(state, t, values)

    def since(self, state: State) -> float | None:
        """For a top-level ``for``: the first second of the current run of the inner condition."""
        if self._top_for is None:
            return None
        entry = state.get(self._top_for)
        return None if entry is None else entry[0]

    # -- compilation ------------------------------------------------------------------------------

    def _key(self) -> str:
        self._count += 1
        return f"n{self._count - 1}"

    def _resolve(self, operand: c.Operand, other: c.Operand) -> c.Num | c.Sig:
        if not isinstance(operand, c.Str):
            return operand
        assert isinstance(other, c.Sig)
        table = self._choices.get(other.name)
        if not table:
            raise ConditionError(f"signal {other.name!r} has no value table to look {operand.text!r} up in", self.text)
        for raw, label in table.items():
            if label == operand.text:
                return c.Num(float(raw))
        raise ConditionError(f"{operand.text!r} is not a value of {other.name!r} (values: {sorted(table.values())})",
                             self.text)

    @staticmethod
    def _read(operand: c.Num | c.Sig) -> Callable[[Mapping[str, float]], float | None]:
        if isinstance(operand, c.Num):
            value = operand.value
            return lambda values: value
        name = operand.name
        return lambda values: values.get(name)

    def _compile(self, node: c.Node) -> _Fn:
        if isinstance(node, c.Truthy):
            read = self._read(self._resolve(node.operand, node.operand))
            return lambda s, t, v: (x := read(v)) is not None and x != 0
        if isinstance(node, c.Cmp):
            return self._compile_cmp(node)
        if isinstance(node, c.And):
            fns = [self._compile(i) for i in node.items]
            # evaluate every item (no short circuit) so each keeps its state current
            return lambda s, t, v: all([f(s, t, v) for f in fns])
        if isinstance(node, c.Or):
            fns = [self._compile(i) for i in node.items]
            return lambda s, t, v: any([f(s, t, v) for f in fns])
        if isinstance(node, c.Not):
            inner = self._compile(node.item)
            return lambda s, t, v: not inner(s, t, v)
        if isinstance(node, c.Edge):
            return self._compile_edge(node)
        if isinstance(node, c.For):
            return self._compile_for(node)
        raise ConditionError(f"unknown node {type(node).__name__}", self.text)  # pragma: no cover

    def _compile_cmp(self, node: c.Cmp) -> _Fn:
        left_raw = self._resolve(node.left, node.right)
        right_raw = self._resolve(node.right, node.left)
        left, right, op = self._read(left_raw), self._read(right_raw), _OPS[node.op]
        h = node.hysteresis
        if not h:
            def plain(s: State, t: float, v: Mapping[str, float]) -> bool:
                a, b = left(v), right(v)
                return a is not None and b is not None and op(a, b)
            return plain
        key = self._key()
        # once on, the threshold moves by h against the direction of the comparison
        relax = -h if node.op in (">", ">=") else h

        def hyst(s: State, t: float, v: Mapping[str, float]) -> bool:
            a, b = left(v), right(v)
            if a is None or b is None:
                s.pop(key, None)
                return False
            on = op(a, b) or (bool(s.get(key)) and op(a - b, relax))
            if on:
                s[key] = 1
            else:
                s.pop(key, None)
            return on
        return hyst

    def _compile_edge(self, node: c.Edge) -> _Fn:
        inner, key, rising = self._compile(node.item), self._key(), node.rising

        def edge(s: State, t: float, v: Mapping[str, float]) -> bool:
            now = inner(s, t, v)
            before = bool(s.get(key))
            if now:
                s[key] = 1
            else:
                s.pop(key, None)
            return (now and not before) if rising else (before and not now)
        return edge

    def _compile_for(self, node: c.For) -> _Fn:
        inner, key, need, gap, period = self._compile(node.item), self._key(), node.seconds, self.max_gap_s, self.period_s

        def held(s: State, t: float, v: Mapping[str, float]) -> bool:
            now = inner(s, t, v)
            entry = s.get(key)
            if not now:
                s.pop(key, None)
                return False
            if entry is None or t - entry[1] > gap or t < entry[1]:
                entry = [t, t]
            else:
                entry = [entry[0], t]
            s[key] = entry
            return t - entry[0] + period >= need - 1e-6  # frame times are floats
        return held


def compile_condition(text: str, choices: Mapping[str, Mapping[int, str] | None] | None = None,
                      *, max_gap_s: float = MAX_GAP_S, period_s: float = 1.0) -> Evaluator:
    """Parse and compile in one step (``period_s = 0`` for frame-by-frame evaluation)."""
    return Evaluator(c.parse(text), choices, text=text, max_gap_s=max_gap_s, period_s=period_s)
