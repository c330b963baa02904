"""Bearer JWTs from an external OIDC issuer, beside the API's own tokens.

Configured by ``[oidc]`` in the API's TOML (``issuer``, ``audience``, optional ``jwks_url``,
default ``<issuer>/.well-known/jwks.json``; ``scopes_claim``, default ``dcm_scopes``). A JWT is
accepted when PyJWT verifies it against the issuer's published keys (fetched by
:class:`jwt.PyJWKClient`, cached): an asymmetric algorithm (RS256/RS384/RS512, ES256/ES384, PS256,
EdDSA), ``iss`` and ``aud`` as configured, and ``exp`` present and in the future. Its scopes are
the claim's entries (a list, or a space-separated string), each one of the API's own scopes
(``admin``, ``read``, ``vin``, ``fleet:<name>``, ``vehicle:<id>``, ``driver:<id>``); a JWT with a
malformed scope or none is refused, so an issuer's unrelated scopes grant nothing. The token id
(for rate limits and logs) is ``jwt:<sub>``.
"""
from __future__ import annotations

import dataclasses
import logging

from .errors import TokenError
from .tokens import Token, check_scope

log = logging.getLogger(__name__)

ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "PS256", "EdDSA")


@dataclasses.dataclass(frozen=True)
class OidcConfig:
    issuer: str
    audience: str
    jwks_url: str
    scopes_claim: str = "dcm_scopes"


def looks_like_jwt(text: str) -> bool:
    return text.count(".") == 2 and not text.startswith("dcm_")


class OidcVerifier:
    """Verifies JWTs (blocking: the JWKS may be fetched; call it from a thread)."""

    def __init__(self, config: OidcConfig) -> None:
        import jwt

        self.config = config
        self._jwt = jwt
        self._keys = jwt.PyJWKClient(config.jwks_url, cache_keys=True, lifespan=300, timeout=5)

    def verify(self, text: str) -> Token | None:
        """The token's identity and scopes, or None when it is not a valid JWT of the issuer."""
        jwt = self._jwt
        try:
            key = self._keys.get_signing_key_from_jwt(text)
            claims = jwt.decode(text, key.key, algorithms=list(ALGORITHMS), audience=self.config.audience,
                                issuer=self.config.issuer, options={"require": ["exp", "iss", "aud", "sub"]})
        except jwt.PyJWKClientError as exc:
            log.warning("oidc: cannot get the issuer's keys from %s: %s", self.config.jwks_url, exc)
            return None
        except jwt.PyJWTError:
            return None
        raw = claims.get(self.config.scopes_claim)
        scopes = raw.split() if isinstance(raw, str) else raw
        if not isinstance(scopes, list) or not scopes:
            return None
        try:
            checked = tuple(sorted({check_scope(s) for s in scopes}))
        except TokenError:
            return None
        return Token(f"jwt:{claims['sub']}", "oidc", checked, float(claims.get("iat", 0)), float(claims["exp"]))
