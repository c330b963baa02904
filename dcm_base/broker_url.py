"""Broker URLs: ``mqtt://[user[:password]@]host[:port]`` (port 1883) or ``mqtts://...`` (TLS, port 8883)."""
from __future__ import annotations

import dataclasses
from urllib.parse import unquote, urlsplit

from .errors import InputError


class BrokerUrlError(InputError):
    """A broker URL is malformed."""


@dataclasses.dataclass(frozen=True)
class BrokerUrl:
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)

    @classmethod
    def parse(cls, url: str) -> BrokerUrl:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise BrokerUrlError(f"broker URL must look like mqtt://host:port or mqtts://host:port, got {url!r}")
        try:
            port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        except ValueError as exc:
            raise BrokerUrlError(f"bad port in broker URL {url!r}") from exc
        return cls(
            host=parts.hostname,
            port=port,
            tls=parts.scheme == "mqtts",
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )

    def __str__(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"
