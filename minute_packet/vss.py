"""COVESA VSS names for DBC signals, from an overlay file in the KUKSA ``dbc2vss`` style.

An overlay is JSON, either a VSS tree (``{"Vehicle": {"children": {"Speed": {...}}}}``) or flat
dotted paths (``{"Vehicle.Speed": {...}}``); a leaf that maps a DBC signal carries::

    "dbc2vss": {"signal": "VehicleSpeed", "interval_ms": 1000, "transform": {"math": "x / 3.6"}}

(``"dbc"`` is accepted as the older KUKSA spelling of ``"dbc2vss"``; ``interval_ms`` is
ignored: the gateway samples every signal once a second.) ``signal`` is a DBC signal name or
``Message.Signal``; ``transform`` is absent, ``{"math": expr}`` (an expression in ``x``: numbers,
``+ - * / // % **``, parentheses and ``floor``, ``ceil``, ``abs``, ``round``, ``min``, ``max``)
or ``{"mapping": [{"from": raw, "to": value}, ...]}``. The schema keeps path and transform
(column key ``vss``); :func:`vss_select_sql` turns them into a SQL projection, so a query can
say ``"Vehicle.Speed"`` whatever the car's DBC calls the signal.
"""
from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .errors import SchemaError

_PATH = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)+$")
_FUNCS = {"floor": "floor", "ceil": "ceil", "abs": "abs", "round": "round", "min": "least", "max": "greatest"}
_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**"}
Mapping_ = dict[str, dict[str, Any]]  # signal -> {"path": ..., "transform": ...}


def load_overlay(path: Path) -> Mapping_:
    """Read an overlay file: DBC signal (``Signal`` or ``Message.Signal``) → ``{"path", "transform"}``."""
    try:
        doc = json.loads(Path(path).read_text())
    except OSError as exc:
        raise SchemaError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (ValueError, RecursionError) as exc:
        raise SchemaError(f"{path}: not valid JSON: {exc}") from None
    try:
        return parse_overlay(doc)
    except SchemaError as exc:
        raise SchemaError(f"{path}: {exc}") from None


def parse_overlay(doc: Any) -> Mapping_:
    """The mapping of an overlay document (see the module docstring)."""
    if not isinstance(doc, dict):
        raise SchemaError("a VSS overlay must be a JSON object")
    out: Mapping_ = {}
    for vss_path, node in _leaves(doc, ""):
        spec = node.get("dbc2vss", node.get("dbc"))
        if spec is None:
            continue
        if not _PATH.match(vss_path):
            raise SchemaError(f"{vss_path!r} is not a VSS path (Branch.Leaf)")
        if not isinstance(spec, dict) or not isinstance(spec.get("signal"), str) or not spec["signal"]:
            raise SchemaError(f"{vss_path}: dbc2vss needs a signal name")
        transform = spec.get("transform")
        _check_transform(vss_path, transform)
        signal = spec["signal"]
        if signal in out:
            raise SchemaError(f"{vss_path}: signal {signal!r} is already mapped to {out[signal]['path']}")
        out[signal] = {"path": vss_path, "transform": transform}
    return out


def _leaves(doc: Mapping[str, Any], prefix: str) -> Iterable[tuple[str, dict]]:
    for key, node in doc.items():
        if not isinstance(node, dict):
            raise SchemaError(f"{prefix}{key}: must be an object")
        path = f"{prefix}{key}"
        children = node.get("children")
        if children is not None:
            if not isinstance(children, dict):
                raise SchemaError(f"{path}: children must be an object")
            yield from _leaves(children, path + ".")
        yield path, node


def _check_transform(where: str, transform: Any) -> None:
    if transform is None:
        return
    if not isinstance(transform, dict) or len(transform) != 1 or next(iter(transform)) not in ("math", "mapping"):
        raise SchemaError(f"{where}: transform must be {{\"math\": ...}} or {{\"mapping\": [...]}}")
    if "math" in transform:
        if not isinstance(transform["math"], str):
            raise SchemaError(f"{where}: transform math must be a string")
        math_sql(transform["math"], "x", where=where)
        return
    pairs = transform["mapping"]
    if not isinstance(pairs, list) or not pairs:
        raise SchemaError(f"{where}: transform mapping must be a non-empty list")
    for pair in pairs:
        if (not isinstance(pair, dict) or set(pair) != {"from", "to"} or not _number(pair["from"])
                or not isinstance(pair["to"], (int, float, str, bool))):
            raise SchemaError(f"{where}: each mapping entry is {{\"from\": number, \"to\": value}}")


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def math_sql(expr: str, column_sql: str, *, where: str = "transform") -> str:
    """A KUKSA ``math`` transform as a SQL expression over ``column_sql`` (DuckDB and Spark SQL)."""
    try:
        tree = ast.parse(expr, mode="eval").body
    except SyntaxError as exc:
        raise SchemaError(f"{where}: bad transform math {expr!r}: {exc.msg}") from None

    def render(node: ast.AST) -> str:
        if isinstance(node, ast.Name) and node.id == "x":
            return column_sql
        if isinstance(node, ast.Constant) and _number(node.value):
            return repr(float(node.value)) if isinstance(node.value, float) else str(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            return f"({'-' if isinstance(node.op, ast.USub) else '+'}{render(node.operand)})"
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            a, b = render(node.left), render(node.right)
            op = _OPS[type(node.op)]
            if op == "//":
                return f"floor(({a}) / ({b}))"
            if op == "**":
                return f"power({a}, {b})"
            if op == "%":
                return f"mod({a}, {b})"
            return f"({a} {op} {b})"
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS
                and not node.keywords and node.args):
            return f"{_FUNCS[node.func.id]}({', '.join(render(a) for a in node.args)})"
        raise SchemaError(f"{where}: transform math {expr!r} uses something other than x, numbers, "
                          f"+ - * / // % **, and {sorted(_FUNCS)}")

    return render(tree)


def _sql_literal(v: Any) -> str:
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, str):
        return "'" + v.replace("'", "''") + "'"
    return repr(v)


def transform_sql(vss: Mapping[str, Any], column_sql: str) -> str:
    """The SQL value of a column under its VSS transform (the column itself when there is none)."""
    t = vss.get("transform")
    if not t:
        return column_sql
    if "math" in t:
        return math_sql(t["math"], column_sql)
    cases = " ".join(f"WHEN {column_sql} = {_sql_literal(p['from'])} THEN {_sql_literal(p['to'])}" for p in t["mapping"])
    return f"CASE {cases} END"


def vss_select_sql(columns: Iterable[Any]) -> str:
    """``<expr> AS "<VSS path>"`` for every ``last`` column of a schema that has a VSS name, comma-separated."""
    parts = []
    for c in columns:
        if c.vss and c.aggregate == "last":
            parts.append(f'{transform_sql(c.vss, _quote(c.name))} AS {_quote(c.vss["path"])}')
    return ", ".join(parts)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
