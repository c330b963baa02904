"""The application's typed state (``aiohttp.web.AppKey``), shared by the middleware and the routes."""
from __future__ import annotations

import collections
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from .alerts import AlertReader
    from .config import ApiConfig
    from .geofences import GeofenceStore
    from .ratelimit import RateLimiter
    from .series import LakeReader
    from .state import StateReader
    from .stream import Hub
    from .tokens import TokenStore
    from .views import ViewCache

CONFIG = web.AppKey("config", "ApiConfig")
TOKENS = web.AppKey("tokens", "TokenStore")
LIMITER = web.AppKey("limiter", "RateLimiter")
COUNTERS = web.AppKey("counters", collections.Counter)
STATE = web.AppKey("state", "StateReader")
LAKE = web.AppKey("lake", "LakeReader")
ALERTS = web.AppKey("alerts", "AlertReader")
VIEWS = web.AppKey("views", "ViewCache")
GEOFENCES = web.AppKey("geofences", "GeofenceStore")
HUB = web.AppKey("hub", "Hub")
CLOCK = web.AppKey("clock", object)
VEHICLE_LIST = web.AppKey("vehicle_list", dict)  # the rendered vehicle list of the current second (routes_vehicles)
OIDC = web.AppKey("oidc", object)  # fleet_api.oidc.OidcVerifier, or None
