"""The one configuration loader: a TOML file plus overrides → checked fields for a frozen dataclass.

Every service describes its keys in a table ``{"section.key": Key(field, convert)}``
and calls :func:`load_fields`; the rules are the same for all of them:

- keys are dotted TOML paths (``mqtt.url``, ``lake.root``); an unknown key is an error
  (a renamed one says its new name);
- each value goes through its converter, which raises ``ValueError`` with a short reason;
- a relative path *in the file* is relative to the file's folder (``Key(..., path=True)``;
  a URI such as ``s3://...`` is left alone); a path given as an override (a CLI flag) is
  taken as given, relative to the working directory;
- overrides use the same dotted keys and win over the file; ``None`` means "not given";
- every error is a :class:`~dcm_base.errors.ConfigError` reading ``<file>: <key>: <problem>``
  (``command line`` instead of the file when there is none).

The service then builds its frozen dataclass from the fields and runs the checks that
span several keys (raising ``ConfigError(f"{where}: {key}: ...")`` the same way).
"""
from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from .errors import ConfigError

Converter = Callable[[Any], Any]


@dataclasses.dataclass(frozen=True)
class Key:
    """Where a TOML key goes (``field``), how its value is checked (``convert``), and whether it
    holds a path (or a list of paths) resolved against the config file's folder."""

    field: str
    convert: Converter
    path: bool = False


def where(path: Path | None) -> str:
    """How errors name the configuration's origin."""
    return str(path) if path is not None else "command line"


def load_toml(path: str | Path, error: type[ConfigError] = ConfigError) -> dict[str, Any]:
    """The TOML document of a file as parsed; a missing or unreadable file or bad TOML raises
    ``error`` (a :class:`ConfigError`) naming the file."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML: {exc}") from None


def read_toml(path: Path, tables: Collection[str] = ()) -> dict[str, Any]:
    """The file's keys flattened to dotted names; ``tables`` are kept whole (maps the user fills
    with names of their own, such as ``collect.aggregates``)."""
    return _flatten(load_toml(path), "", set(tables))


def _flatten(table: Mapping[str, Any], prefix: str, keep: set[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and dotted not in keep:
            out.update(_flatten(value, dotted + ".", keep))
        else:
            out[dotted] = value
    return out


def _resolve(value: Any, base: Path) -> Any:
    if isinstance(value, (list, tuple)):
        return type(value)(_resolve(v, base) for v in value)
    if isinstance(value, str) and "://" in value:
        return value  # a URI (s3://..., file:///...) is not a path on this machine
    return base / value


def load_fields(path: Path | None, keys: Mapping[str, Key], overrides: Mapping[str, Any] | None = None, *,
                required: Collection[str] = (), tables: Collection[str] = (),
                renamed: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Read ``path`` (may be None), apply ``overrides``, convert every value; returns field → value."""
    origin = where(path)
    from_file = read_toml(path, tables) if path is not None else {}
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    fields: dict[str, Any] = {}
    for source, values in (("file", from_file), ("override", given)):
        for key, value in values.items():
            if key not in keys:
                hint = f" (renamed {renamed[key]})" if renamed and key in renamed else ""
                raise ConfigError(f"{origin}: {key}: unknown key{hint}")
            spec = keys[key]
            try:
                converted = spec.convert(value)
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"{origin}: {key}: {exc}") from None
            if spec.path and source == "file" and path is not None:
                converted = _resolve(converted, path.parent)
            fields[spec.field] = converted
    for key in required:
        if keys[key].field not in fields:
            raise ConfigError(f"{origin}: {key}: required")
    return fields


# -- converters: each returns the checked value or raises ValueError with a short reason ----------

def string(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise ValueError("must be a non-empty string")
    return v


def optional_string(v: Any) -> str | None:
    """A string; the empty string means "none" (``http = ""`` switches the HTTP API off)."""
    if not isinstance(v, str):
        raise ValueError("must be a string")
    return v or None


def boolean(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError("must be true or false")
    return v


def number(kind: type = float, *, low: float | None = None, high: float | None = None,
           positive: bool = False) -> Converter:
    """An int (``kind=int``: a whole number) or float, optionally positive or within [low, high]."""
    def check(v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError("must be a positive number" if positive
                             else "must be a number" if kind is float else "must be an integer")
        if kind is int and not float(v).is_integer():
            raise ValueError("must be an integer")
        if positive and v <= 0:
            raise ValueError("must be a positive number")
        if (low is not None and v < low) or (high is not None and v > high):
            raise ValueError(f"must be from {low:g} to {high:g}" if low is not None and high is not None
                             else f"must be at least {low:g}" if low is not None else f"must be at most {high:g}")
        return kind(v)

    return check


def positive(kind: type = float) -> Converter:
    return number(kind, positive=True)


def mib(v: Any) -> int:
    """A positive number of MiB, as bytes."""
    return int(positive(float)(v) * (1 << 20))


def one_of(*choices: str) -> Converter:
    def check(v: Any) -> str:
        if v not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return v

    return check


def string_list(v: Any) -> list[str]:
    if not isinstance(v, (list, tuple)) or not all(isinstance(s, str) for s in v):
        raise ValueError("must be a list of strings")
    return list(v)


def path(v: Any) -> Path:
    if isinstance(v, Path):
        return v
    return Path(string(v))


def path_or_uri(v: Any) -> str | Path:
    """A local path, or a URI (``scheme://...``) kept as a string."""
    if isinstance(v, Path):
        return v
    v = string(v)
    return v if "://" in v else Path(v)


def paths(v: Any) -> tuple[Path, ...]:
    if isinstance(v, (list, tuple)) and all(isinstance(p, Path) for p in v):
        return tuple(v)
    return tuple(Path(p) for p in string_list(v))


def checked(check: Callable[[Any], Any], *errors: type[Exception], first: Converter = string) -> Converter:
    """``first`` then ``check`` (a validator of another module), its ``errors`` reported as ValueError."""
    def convert(v: Any) -> Any:
        try:
            return check(first(v))
        except errors as exc:
            raise ValueError(str(exc)) from None

    return convert
