"""The condition language: parsing (with clear errors) and second-by-second semantics."""
from __future__ import annotations

import json

import pytest

from minute_packet import condition as c
from minute_packet.condition import ConditionError
from minute_packet.condition_eval import compile_condition


def run(text: str, rows: list[dict], start: int = 1000, choices=None) -> list[bool]:
    ev = compile_condition(text, choices)
    state: dict = {}
    out = []
    for i, values in enumerate(rows):
        out.append(ev(state, start + i, values))
        state = json.loads(json.dumps(state))  # what a checkpoint keeps must be enough
    return out


def test_parses_the_issue_example_to_an_ast():
    node = c.parse("EngineCoolantTemp > 110 for 60 s")
    assert node == c.For(c.Cmp(">", c.Sig("EngineCoolantTemp"), c.Num(110.0)), 60.0)


def test_precedence_not_and_or_for_and_parentheses():
    node = c.parse("not a > 1 and b or c for 2 min")
    assert node == c.For(c.Or((c.And((c.Not(c.Cmp(">", c.Sig("a"), c.Num(1.0))), c.Truthy(c.Sig("b")))),
                               c.Truthy(c.Sig("c")))), 120.0)
    assert c.parse("(a > 1 for 5 s) and rising(B.x == 2)") == c.And((
        c.For(c.Cmp(">", c.Sig("a"), c.Num(1.0)), 5.0), c.Edge(c.Cmp("==", c.Sig("B.x"), c.Num(2.0)))))
    assert c.parse("v < 12.2 hysteresis 0.1") == c.Cmp("<", c.Sig("v"), c.Num(12.2), 0.1)
    assert c.signals(c.parse("a > b and falling(c) or d__max < -3")) == {"a", "b", "c", "d__max"}


@pytest.mark.parametrize("text, message, column", [
    ("a >", "expected a signal, number or string, found the end", 4),
    ("a > 1 for 10", "expected a unit", 13),
    ("a > 1 for 0 s", "a duration must be positive", 11),
    ("a == 1 hysteresis 2", "hysteresis needs an ordering comparison", 8),
    ("(a > 1", "expected ')', found the end", 7),
    ("a > 1 b", "unexpected 'b' after a complete condition", 7),
    ("1 > 2", "a comparison needs at least one signal", 5),
    ("a > 1 & b", "unexpected character '&'", 7),
    ("rising a", "expected '('", 8),
    ("", "non-empty", None),
])
def test_parse_errors_say_what_and_where(text, message, column):
    with pytest.raises(ConditionError) as err:
        c.parse(text)
    assert message in str(err.value)
    assert err.value.position == (None if column is None else column - 1)
    if column is not None:
        assert f"at column {column}" in str(err.value)


def test_for_is_true_from_the_nth_consecutive_second():
    hot, cool = {"T": 111}, {"T": 110}
    assert run("T > 110 for 3 s", [hot, hot, hot, hot, cool, hot]) == [False, False, True, True, False, False]
    assert run("T > 110 for 3 s", [hot, hot]) == [False, False]


def test_for_restarts_after_a_gap_in_the_rows():
    ev = compile_condition("T > 1 for 3 s", max_gap_s=10)
    s: dict = {}
    assert [ev(s, t, {"T": 2}) for t in (0, 1, 2)] == [False, False, True]
    assert ev(s, 30, {"T": 2}) is False  # 28 s of silence: count again
    assert ev(s, 31, {"T": 2}) is False and ev(s, 32, {"T": 2}) is True
    assert ev.since(s) == 30


def test_missing_signal_is_false_and_resets_duration():
    assert run("T > 1 for 2 s", [{"T": 5}, {}, {"T": 5}, {"T": 5}]) == [False, False, False, True]
    assert run("not T > 1", [{}]) == [True]


def test_rising_and_falling_edges():
    rows = [{"x": 0}, {"x": 1}, {"x": 1}, {"x": 0}, {"x": 1}]
    assert run("rising(x == 1)", rows) == [False, True, False, False, True]
    assert run("falling(x)", rows) == [False, False, False, True, False]
    assert run("rising(x == 1)", [{"x": 1}]) == [True]  # unknown before: the first true is an edge


def test_hysteresis_does_not_flap_on_jitter():
    volts = [12.3, 12.19, 12.22, 12.24, 12.26, 12.18, 12.14]
    rows = [{"v": v} for v in volts]
    assert run("v < 12.2", rows) == [False, True, False, False, False, True, True]
    assert run("v < 12.2 hysteresis 0.05", rows) == [False, True, True, True, False, True, True]
    assert run("s > 100 hysteresis 5", [{"s": x} for x in (101, 95.5, 95, 100, 100.5)]) == \
        [True, True, False, False, True]


def test_value_table_names_resolve_against_the_schema():
    choices = {"EngineState": {0: "Off", 2: "Running"}}
    rows = [{"EngineState": 0}, {"EngineState": 2}]
    assert run('EngineState == "Off"', rows, choices=choices) == [True, False]
    with pytest.raises(ConditionError, match="'Idle' is not a value of 'EngineState'"):
        compile_condition('EngineState == "Idle"', choices)
    with pytest.raises(ConditionError, match="has no value table"):
        compile_condition('Speed == "Fast"', choices)


def test_signal_to_signal_comparison_and_truthiness():
    assert run("a > b", [{"a": 2, "b": 1}, {"a": 1, "b": 1}, {"a": 3}]) == [True, False, False]
    assert run("CrashDetected", [{"CrashDetected": 0}, {"CrashDetected": 1}]) == [False, True]


def test_frame_by_frame_durations_count_real_time():
    ev = compile_condition("a > 1 for 500 ms", period_s=0, max_gap_s=1)
    s: dict = {}
    assert [ev(s, t, {"a": 2}) for t in (10.000, 10.250, 10.499, 10.500, 10.6)] == [False, False, False, True, True]
    assert ev(s, 12.0, {"a": 2}) is False  # 1.4 s without a frame: counting again
