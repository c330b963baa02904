"""Typed errors of the fleet API. :mod:`fleet_api.middleware` turns each into its HTTP status in
one place; the CLI turns the configuration and token errors into one-line messages."""
from __future__ import annotations


class ApiError(Exception):
    """Base of every error the fleet API raises on purpose; ``status`` is its HTTP status."""

    status = 500
    code = "error"


class ApiConfigError(ApiError):
    """The API's configuration is invalid or incomplete (names the file and the key)."""

    code = "config"


class TokenError(ApiError):
    """A token operation got bad input (an unknown scope, a bad lifetime, no such token)."""

    status = 400
    code = "token"


class BadRequest(ApiError):
    status = 400
    code = "bad_request"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"


class Forbidden(ApiError):
    """The token may see the object but not change it (e.g. geofences need an admin token)."""

    status = 403
    code = "forbidden"


class NotFound(ApiError):
    """Unknown, or outside the token's scope: the same answer, so ids do not leak."""

    status = 404
    code = "not_found"


class Conflict(ApiError):
    status = 409
    code = "conflict"


class RateLimited(ApiError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class SourceUnavailable(ApiError):
    """A data source (state database, lake, alert store, views) cannot be read right now."""

    status = 503
    code = "unavailable"
