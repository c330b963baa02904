"""``dcm sink init``: a new sink's secrets (mode 0600) and a configuration skeleton beside them.

The sink has no built-in masking key (a public one would make the lake's vehicle ids reversible
by trying VINs), so a deployment starts here::

    dcm sink init --config /etc/dcm/sink.toml [--broker mqtts://broker:8883] [--lake /srv/lake]

writes ``sink-mask.key`` (32 random bytes, hex), ``sink-http.token`` (24 random bytes, hex) and
``sink.toml`` naming them, refusing to overwrite any file that exists (a lost masking key splits
every vehicle's history in two).
"""
from __future__ import annotations

import logging
import secrets
from pathlib import Path

from dcm_base.broker_url import BrokerUrl
from dcm_base.errors import InputError

from .pki import write_private

log = logging.getLogger(__name__)

KEY_NAME = "sink-mask.key"
TOKEN_NAME = "sink-http.token"

SKELETON = """\
# dcm sink worker configuration (every key: cloud_sink/config.py), made by `dcm sink init`.
secret_file = "{key}"          # HMAC key masking vehicle ids (mode 0600): keep it, back it up
http_token_file = "{token}"    # bearer token of /metrics and /vehicles/.../latest (mode 0600)
http = "127.0.0.1:9108"                 # beyond loopback it needs the token (it has one)
state = "state/state.sqlite"            # created mode 0600: it holds raw vehicle ids
quarantine = "state/quarantine"
dedupe_days = 30
park_days = 7

[mqtt]
url = "{broker}"                        # mqtts:// (TLS) unless the broker is on loopback
# ca_file = "broker-ca.pem"
topic_prefix = "dcm"

[lake]
root = "{lake}"
layout = "vehicle"                      # "bucket" beyond a few thousand vehicles per worker
"""


def init_sink(config: Path, *, broker: str, lake: str) -> dict[str, str]:
    """Create the key, the token and ``config``; returns their paths. Raises :class:`InputError`
    when any of them exists already (nothing is written then)."""
    folder = config.parent
    key, token = folder / KEY_NAME, folder / TOKEN_NAME
    existing = [str(p) for p in (config, key, token) if p.exists()]
    if existing:
        raise InputError(f"{', '.join(existing)}: exists already (not overwritten)")
    BrokerUrl.parse(broker)  # a malformed URL is refused before anything is written
    write_private(key, secrets.token_hex(32).encode() + b"\n")
    write_private(token, secrets.token_hex(24).encode() + b"\n")
    text = SKELETON.format(key=KEY_NAME, token=TOKEN_NAME, broker=_toml_text(broker), lake=_toml_text(lake))
    write_private(config, text.encode())
    log.info("sink initialised in %s", folder)
    return {"config": str(config), "secret_file": str(key), "http_token_file": str(token)}


def _toml_text(value: str) -> str:
    """``value`` for the inside of a TOML basic string."""
    if any(ord(c) < 32 for c in value):
        raise InputError(f"{value!r}: control characters are not allowed here")
    return value.replace("\\", "\\\\").replace('"', '\\"')
