"""The condition language shared by the cloud's generic rule and the gateway's edge triggers: text to an AST.

It sits in the wire package because both sides must read a condition the same way: a rule file
in the cloud and a trigger in a gateway's config use one grammar and one semantics.

Grammar (keywords are case-insensitive; signal names are case-sensitive)::

    condition  := or_expr [ "for" NUMBER unit ]            unit: ms | s | min | h
    or_expr    := and_expr { "or" and_expr }
    and_expr   := not_expr { "and" not_expr }
    not_expr   := "not" not_expr | atom
    atom       := "(" condition ")"
                | ("rising" | "falling") "(" condition ")"
                | operand [ op operand [ "hysteresis" NUMBER ] ]    op: > >= < <= == !=
    operand    := NUMBER | NAME | STRING                    NAME: Signal, Message.Signal, Signal__max

Examples: ``EngineCoolantTemp > 110 for 60 s``, ``rising(CrashDetected == 1)``,
``BatteryVoltage < 12.2 hysteresis 0.1 and EngineState == "Off" for 2 min``.
A bare operand means "is non-zero". A string compares against the value table (``VAL_``) of the
signal on the other side of the operator; that is resolved when the rule is bound to a schema.
``for`` binds loosest: ``a and b for 10 s`` is ``(a and b) for 10 s``. Semantics are in
:mod:`minute_packet.condition_eval`. Every parse problem raises :class:`ConditionError` with its column.
"""
from __future__ import annotations

import dataclasses
import re

from dcm_base.errors import InputError



class ConditionError(InputError, ValueError):
    """A condition does not parse or names something that does not exist (bad input: exit 2).

    ``position`` is the 0-based character offset of the problem in ``text`` (or None)."""

    def __init__(self, message: str, text: str = "", position: int | None = None) -> None:
        self.text = text
        self.position = position
        where = f" at column {position + 1}" if position is not None else ""
        shown = f" in {text!r}" if text else ""
        super().__init__(f"{message}{where}{shown}")

OPS = (">=", "<=", "==", "!=", ">", "<")
KEYWORDS = frozenset({"and", "or", "not", "for", "rising", "falling", "hysteresis"})
UNITS = {"ms": 0.001, "s": 1.0, "sec": 1.0, "secs": 1.0, "second": 1.0, "seconds": 1.0,
         "min": 60.0, "mins": 60.0, "minute": 60.0, "minutes": 60.0, "h": 3600.0, "hour": 3600.0, "hours": 3600.0}
MAX_LENGTH = 4000
MAX_DEPTH = 50

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<number>-?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)
  | (?P<string>"[^"\\]*"|'[^'\\]*')
  | (?P<op>>=|<=|==|!=|>|<)
  | (?P<paren>[()])
""", re.VERBOSE)


@dataclasses.dataclass(frozen=True)
class Num:
    value: float


@dataclasses.dataclass(frozen=True)
class Sig:
    name: str


@dataclasses.dataclass(frozen=True)
class Str:
    text: str


Operand = Num | Sig | Str


@dataclasses.dataclass(frozen=True)
class Cmp:
    """``left op right``; with ``hysteresis`` h an ordering comparison, once true, stays true until
    it is false by more than h (``x > 10 hysteresis 2`` turns on above 10 and off at 8 or below)."""

    op: str
    left: Operand
    right: Operand
    hysteresis: float = 0.0


@dataclasses.dataclass(frozen=True)
class Truthy:
    """A bare operand: true when the signal's value is non-zero."""

    operand: Operand


@dataclasses.dataclass(frozen=True)
class And:
    items: tuple[Node, ...]


@dataclasses.dataclass(frozen=True)
class Or:
    items: tuple[Node, ...]


@dataclasses.dataclass(frozen=True)
class Not:
    item: Node


@dataclasses.dataclass(frozen=True)
class Edge:
    """True only on the second ``item`` becomes true (``rising``) or false (``falling``)."""

    item: Node
    rising: bool = True


@dataclasses.dataclass(frozen=True)
class For:
    """True once ``item`` has been true for ``seconds`` consecutive seconds."""

    item: Node
    seconds: float


Node = Cmp | Truthy | And | Or | Not | Edge | For


@dataclasses.dataclass(frozen=True)
class _Tok:
    kind: str  # number, name, keyword, string, op, paren, end
    text: str
    pos: int


def _tokens(text: str) -> list[_Tok]:
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ConditionError(f"unexpected character {text[pos]!r}", text, pos)
        kind = m.lastgroup or ""
        if kind != "ws":
            word = m.group()
            if kind == "name" and word.lower() in KEYWORDS:
                kind, word = "keyword", word.lower()
            out.append(_Tok(kind, word, pos))
        pos = m.end()
    out.append(_Tok("end", "", len(text)))
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokens(text)
        self.i = 0
        self.depth = 0

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def fail(self, message: str, tok: _Tok | None = None) -> ConditionError:
        tok = tok or self.peek()
        return ConditionError(message, self.text, tok.pos)

    def expect(self, kind: str, text: str | None = None) -> _Tok:
        tok = self.peek()
        if tok.kind != kind or (text is not None and tok.text != text):
            want = repr(text) if text else kind
            got = "the end" if tok.kind == "end" else repr(tok.text)
            raise self.fail(f"expected {want}, found {got}")
        return self.take()

    def is_kw(self, word: str) -> bool:
        tok = self.peek()
        return tok.kind == "keyword" and tok.text == word

    def condition(self) -> Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(f"nested deeper than {MAX_DEPTH} levels")
        node = self.or_expr()
        if self.is_kw("for"):
            self.take()
            number = self.expect("number")
            unit_tok = self.peek()
            if unit_tok.kind != "name" or unit_tok.text.lower() not in UNITS:
                raise self.fail("expected a unit (ms, s, min, h) after the duration")
            self.take()
            seconds = float(number.text) * UNITS[unit_tok.text.lower()]
            if not seconds > 0:
                raise self.fail("a duration must be positive", number)
            node = For(node, seconds)
        self.depth -= 1
        return node

    def or_expr(self) -> Node:
        items = [self.and_expr()]
        while self.is_kw("or"):
            self.take()
            items.append(self.and_expr())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def and_expr(self) -> Node:
        items = [self.not_expr()]
        while self.is_kw("and"):
            self.take()
            items.append(self.not_expr())
        return items[0] if len(items) == 1 else And(tuple(items))

    def not_expr(self) -> Node:
        if self.is_kw("not"):
            self.take()
            return Not(self.not_expr())
        return self.atom()

    def atom(self) -> Node:
        tok = self.peek()
        if tok.kind == "paren" and tok.text == "(":
            self.take()
            node = self.condition()
            self.expect("paren", ")")
            return node
        if tok.kind == "keyword" and tok.text in ("rising", "falling"):
            self.take()
            self.expect("paren", "(")
            node = self.condition()
            self.expect("paren", ")")
            return Edge(node, rising=tok.text == "rising")
        left = self.operand()
        if self.peek().kind != "op":
            if isinstance(left, Str):
                raise self.fail("a string must be compared with a signal", tok)
            return Truthy(left)
        op = self.take().text
        right_tok = self.peek()
        right = self.operand()
        if isinstance(left, Str) and isinstance(right, Str):
            raise self.fail("two strings cannot be compared; one side must be a signal", right_tok)
        if isinstance(left, Num) and isinstance(right, Num):
            raise self.fail("a comparison needs at least one signal", right_tok)
        hysteresis = 0.0
        if self.is_kw("hysteresis"):
            kw = self.take()
            if op in ("==", "!="):
                raise self.fail("hysteresis needs an ordering comparison (<, <=, >, >=)", kw)
            if Str in (type(left), type(right)):
                raise self.fail("hysteresis does not apply to value-table names", kw)
            number = self.expect("number")
            hysteresis = float(number.text)
            if hysteresis < 0:
                raise self.fail("hysteresis must not be negative", number)
        return Cmp(op, left, right, hysteresis)

    def operand(self) -> Operand:
        tok = self.peek()
        if tok.kind == "number":
            self.take()
            return Num(float(tok.text))
        if tok.kind == "name":
            self.take()
            return Sig(tok.text)
        if tok.kind == "string":
            self.take()
            return Str(tok.text[1:-1])
        got = "the end" if tok.kind == "end" else repr(tok.text)
        raise self.fail(f"expected a signal, number or string, found {got}")


def parse(text: str) -> Node:
    """The AST of a condition; :class:`ConditionError` (with the column) when it is not one."""
    if not isinstance(text, str) or not text.strip():
        raise ConditionError("a condition must be a non-empty string", text if isinstance(text, str) else "")
    if len(text) > MAX_LENGTH:
        raise ConditionError(f"a condition is longer than {MAX_LENGTH} characters")
    p = _Parser(text)
    node = p.condition()
    if p.peek().kind != "end":
        raise p.fail(f"unexpected {p.peek().text!r} after a complete condition")
    return node


def signals(node: Node) -> frozenset[str]:
    """Every signal name the condition reads."""
    out: set[str] = set()

    def walk(n: object) -> None:
        if isinstance(n, Sig):
            out.add(n.name)
        elif isinstance(n, Cmp):
            walk(n.left)
            walk(n.right)
        elif isinstance(n, Truthy):
            walk(n.operand)
        elif isinstance(n, (And, Or)):
            for item in n.items:
                walk(item)
        elif isinstance(n, (Not, Edge, For)):
            walk(n.item)

    walk(node)
    return frozenset(out)
