"""Pagination (``limit`` + opaque ``cursor``) and query-parameter parsing shared by the routes."""
from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .errors import BadRequest

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


def limit_of(query: Mapping[str, str]) -> int:
    raw = query.get("limit", str(DEFAULT_LIMIT))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise BadRequest(f"limit: an integer from 1 to {MAX_LIMIT}")
    return int(raw)


def encode_cursor(key: Sequence[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key), separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(query: Mapping[str, str]) -> list[Any] | None:
    raw = query.get("cursor")
    if not raw:
        return None
    try:
        key = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except ValueError:
        raise BadRequest("cursor: not a cursor this API returned") from None
    if not isinstance(key, list):
        raise BadRequest("cursor: not a cursor this API returned")
    return key


def page(items: Sequence[dict[str, Any]], key: Callable[[dict[str, Any]], Sequence[Any]],
         query: Mapping[str, str]) -> dict[str, Any]:
    """``{"items": [...], "next_cursor": ...}`` of ``items`` (already sorted by ``key``, ascending)
    after the request's cursor; ``next_cursor`` is null on the last page."""
    limit = limit_of(query)
    after = decode_cursor(query)
    if after is not None:
        try:
            items = [i for i in items if list(key(i)) > after]
        except TypeError:
            raise BadRequest("cursor: not a cursor of this list") from None
    chunk = list(items[:limit])
    more = len(items) > limit
    return {"items": chunk, "next_cursor": encode_cursor(key(chunk[-1])) if more and chunk else None}


def time_of(query: Mapping[str, str], name: str, default: int | None = None) -> int | None:
    """A time parameter: Unix seconds or ISO 8601 (UTC unless it has an offset)."""
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    if raw.lstrip("-").isdigit():
        return int(raw)
    try:
        t = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{name}: Unix seconds or an ISO 8601 time, got {raw!r}") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return int(t.timestamp())


def iso(t: float | None) -> str | None:
    return None if t is None else dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat().replace("+00:00", "Z")
