"""Broker URLs: ``mqtt://[user[:password]@]host[:port]`` (port 1883) or ``mqtts://...`` (TLS, port 8883).

TLS is the default beyond this machine: :func:`plaintext_refused` is what every service's config
loader asks before it accepts an ``mqtt://`` URL to another host (``allow_plaintext`` is the
explicit choice that lets it through)."""
from __future__ import annotations

import dataclasses
import ipaddress
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


def is_loopback(host: str) -> bool:
    """True for a host name or address that only this machine can reach: ``localhost`` or a
    loopback address (127.0.0.0/8, ::1); a name such as ``127.example.com`` is not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def plaintext_refused(url: BrokerUrl, allow_plaintext: bool) -> str | None:
    """Why ``url`` is refused (plaintext MQTT beyond loopback without the explicit choice), or None."""
    if url.tls or allow_plaintext or is_loopback(url.host):
        return None
    return (f"plaintext MQTT to {url.host} beyond loopback: use mqtts:// (TLS), or set allow_plaintext = true"
            " to choose plaintext explicitly")
