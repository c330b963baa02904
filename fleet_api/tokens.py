"""Bearer tokens with scopes, stored hashed in SQLite.

A token reads ``dcm_<id>_<secret>``: ``id`` (8 hex digits) finds its row, ``secret`` is 32 random
bytes (URL-safe base64). Only SHA-256 of the whole token is stored; :meth:`TokenStore.verify`
compares digests in constant time (``hmac.compare_digest``). Tokens expire (``expires``) and can
be revoked; an expired or revoked token is refused like an unknown one.

Scopes (a token has one or more):

``admin``            everything, including geofence changes
``read``             every vehicle, driver and view; no changes beyond acknowledging alerts
``fleet:<name>``     the vehicles of one fleet (operational tables), their trips and drivers
``vehicle:<masked>`` one vehicle (its 16-hex-digit masked id)
``driver:<id>``      one driver: their trips and scores, and the vehicles assigned to them
"""
from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import re
import secrets
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from .errors import TokenError

_SCOPE = re.compile(r"^(admin|read|vin|fleet:[^\s:]{1,128}|vehicle:[0-9a-f]{16}|driver:[^\s:]{1,128})$")
_TOKEN = re.compile(r"^dcm_([0-9a-f]{8})_[A-Za-z0-9_-]{43}$")
MAX_TTL_S = 400 * 86400
_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens(id TEXT PRIMARY KEY, name TEXT NOT NULL, digest BLOB NOT NULL,
    scopes TEXT NOT NULL, created REAL NOT NULL, expires REAL NOT NULL, revoked REAL);
"""


def check_scope(scope: str) -> str:
    """The scope if it is well formed; else :class:`TokenError` saying what scopes look like."""
    if not isinstance(scope, str) or not _SCOPE.match(scope):
        raise TokenError(f"scope {scope!r}: must be admin, read, vin, fleet:<name>, vehicle:<16 hex digits>"
                         f" or driver:<id>")
    return scope


def parse_ttl(text: str) -> float:
    """``90d``, ``12h``, ``30m`` or seconds, to seconds (at most 400 days)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", str(text))
    if not m:
        raise TokenError(f"lifetime {text!r}: give e.g. 90d, 12h, 30m or seconds")
    s = float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    if not 0 < s <= MAX_TTL_S:
        raise TokenError(f"lifetime {text!r}: must be positive and at most 400 days")
    return s


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


@dataclasses.dataclass(frozen=True)
class Token:
    id: str
    name: str
    scopes: tuple[str, ...]
    created: float
    expires: float
    revoked: float | None = None

    def to_json(self, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        state = "revoked" if self.revoked else "expired" if self.expires <= now else "active"
        return {"id": self.id, "name": self.name, "scopes": list(self.scopes), "created": self.created,
                "expires": self.expires, "revoked": self.revoked, "state": state}


class TokenStore:
    """The token database (one file; safe to share between threads and processes)."""

    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        self.path = Path(path)
        if not create and not self.path.exists():
            raise TokenError(f"{self.path}: no token database (create a token with dcm api token create)")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, isolation_level=None, timeout=10, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise TokenError(f"{self.path}: cannot open the token database: {exc}") from None
        self._lock = threading.Lock()

    def close(self) -> None:
        self.db.close()

    def create(self, scopes: list[str], ttl_s: float, name: str = "", now: float | None = None) -> tuple[Token, str]:
        """A new token; returns its record and the token text (shown once, never stored)."""
        if not scopes:
            raise TokenError("give at least one scope")
        scopes = sorted({check_scope(s) for s in scopes})
        if not 0 < ttl_s <= MAX_TTL_S:
            raise TokenError("lifetime must be positive and at most 400 days")
        now = time.time() if now is None else now
        with self._lock:
            for _ in range(10):
                tid = secrets.token_hex(4)
                text = f"dcm_{tid}_{secrets.token_urlsafe(32)}"
                try:
                    self.db.execute("INSERT INTO tokens VALUES (?, ?, ?, ?, ?, ?, NULL)",
                                    (tid, name, _digest(text), json.dumps(scopes), now, now + ttl_s))
                    return Token(tid, name, tuple(scopes), now, now + ttl_s), text
                except sqlite3.IntegrityError:
                    continue
        raise TokenError("could not draw a free token id")  # pragma: no cover (2^32 ids)

    def list(self) -> list[Token]:
        rows = self.db.execute("SELECT id, name, scopes, created, expires, revoked FROM tokens ORDER BY created")
        return [Token(r[0], r[1], tuple(json.loads(r[2])), r[3], r[4], r[5]) for r in rows.fetchall()]

    def revoke(self, token_id: str, now: float | None = None) -> bool:
        """Revoke by id (or by the whole token text); False when no active token has it."""
        m = _TOKEN.match(token_id)
        tid = m.group(1) if m else token_id
        with self._lock:
            cur = self.db.execute("UPDATE tokens SET revoked = ? WHERE id = ? AND revoked IS NULL",
                                  (time.time() if now is None else now, tid))
        return cur.rowcount == 1

    def active(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        return self.db.execute("SELECT count(*) FROM tokens WHERE revoked IS NULL AND expires > ?",
                               (now,)).fetchone()[0]

    def verify(self, text: str, now: float | None = None) -> Token | None:
        """The token's record when ``text`` is an active token; else None."""
        m = _TOKEN.match(text)
        if not m:
            return None
        row = self.db.execute("SELECT id, name, digest, scopes, created, expires, revoked FROM tokens WHERE id = ?",
                              (m.group(1),)).fetchone()
        if row is None or not hmac.compare_digest(_digest(text), row[2]):
            return None
        now = time.time() if now is None else now
        if row[6] is not None or row[5] <= now:
            return None
        return Token(row[0], row[1], tuple(json.loads(row[3])), row[4], row[5], row[6])
