"""The request pipeline in one place: typed errors → HTTP, bearer authentication, per-token rate limits.

Every error the handlers (or the layers below) raise on purpose becomes ``{"error": code,
"message": text}`` with its status: :class:`~fleet_api.errors.ApiError` subclasses carry theirs,
a rules-configuration error (a bad geofence) is 400, another speed- or batch-layer error 503.
Anything else is a bug: logged with its traceback, answered 500 without details.
"""
from __future__ import annotations

import asyncio
import logging
import math

from aiohttp import web

from batch_layer.errors import BatchLayerError
from speed_layer.errors import RulesConfigError, SpeedLayerError

from .access import Access
from .errors import ApiError, RateLimited, Unauthorized
from .keys import COUNTERS, LIMITER, OIDC, TOKENS
from .oidc import looks_like_jwt

log = logging.getLogger(__name__)

PUBLIC = ("/", "/index.html", "/api/v1/openapi.json", "/health")
ACCESS = web.RequestKey("access", Access) if hasattr(web, "RequestKey") else "access"  # the caller's Access


def _body(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status, headers=headers)


@web.middleware
async def errors(request: web.Request, handler):
    counters = request.app[COUNTERS]
    try:
        return await handler(request)
    except ApiError as exc:
        counters[f"http_{exc.status}"] += 1
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
        if isinstance(exc, RateLimited):
            headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
        return _body(exc.status, exc.code, str(exc), headers)
    except RulesConfigError as exc:
        counters["http_400"] += 1
        return _body(400, "invalid", str(exc))
    except (SpeedLayerError, BatchLayerError) as exc:
        counters["http_503"] += 1
        log.warning("%s %s: %s", request.method, request.path, exc)
        return _body(503, "unavailable", str(exc))
    except web.HTTPException as exc:
        if exc.status >= 400:
            counters[f"http_{exc.status}"] += 1
            return _body(exc.status, "http", exc.reason)
        raise
    except Exception:
        counters["http_500"] += 1
        log.exception("%s %s failed", request.method, request.path)
        return _body(500, "internal", "internal error (logged)")


@web.middleware
async def authenticate(request: web.Request, handler):
    """Every route but the page, its assets, health and the OpenAPI document needs a bearer token."""
    path = request.path
    if path in PUBLIC or path.startswith("/static/"):
        return await handler(request)
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    value = value.strip()
    token = None
    if scheme.lower() == "bearer":
        verifier = request.app[OIDC]
        if verifier is not None and looks_like_jwt(value):
            token = await asyncio.to_thread(verifier.verify, value)  # may fetch the issuer's keys
        else:
            token = request.app[TOKENS].verify(value)
    if token is None:
        raise Unauthorized("a valid bearer token is required (Authorization: Bearer dcm_... or an issuer's JWT)")
    wait = request.app[LIMITER].take(token.id)
    if wait > 0:
        request.app[COUNTERS]["rate_limited"] += 1
        raise RateLimited(f"rate limit of token {token.id} exceeded", wait)
    request[ACCESS] = Access.of(token)
    return await handler(request)
