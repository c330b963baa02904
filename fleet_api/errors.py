"""Typed errors of the fleet API, a branch of the project's tree (:mod:`dcm_base.errors`).

:mod:`fleet_api.middleware` turns each into its HTTP status in one place; ``dcm.cli`` turns the
configuration and token errors into one-line messages and exit codes. A request's fault (400, 401,
403, 404, 409, 429) is an input error; a source that cannot be read (503) a service error."""
from __future__ import annotations

from dcm_base.errors import ConfigError, DcmError, InputError, ServiceError


class ApiError(DcmError):
    """Base of every error the fleet API raises on purpose; ``status`` is its HTTP status."""

    status = 500
    code = "error"


class ApiConfigError(ApiError, ConfigError):
    """The API's configuration is invalid or incomplete (names the file and the key)."""

    code = "config"


class TokenError(ApiError, InputError):
    """A token operation got bad input (an unknown scope, a bad lifetime, no such token)."""

    status = 400
    code = "token"


class BadRequest(ApiError, InputError):
    status = 400
    code = "bad_request"


class Unauthorized(ApiError, InputError):
    status = 401
    code = "unauthorized"


class Forbidden(ApiError, InputError):
    """The token may see the object but not change it (e.g. geofences need an admin token)."""

    status = 403
    code = "forbidden"


class NotFound(ApiError, InputError):
    """Unknown, or outside the token's scope: the same answer, so ids do not leak."""

    status = 404
    code = "not_found"


class Conflict(ApiError, InputError):
    status = 409
    code = "conflict"


class RateLimited(ApiError, InputError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class SourceUnavailable(ApiError, ServiceError):
    """A data source (state database, lake, alert store, views) cannot be read right now."""

    status = 503
    code = "unavailable"
