"""The aiohttp application: state under typed keys, background tasks in ``cleanup_ctx``.

:func:`make_app` builds it from an :class:`~fleet_api.config.ApiConfig` and refuses to when no
active token exists (a server nobody may call, or one someone would open up, is a
misconfiguration). :func:`serve` runs it until cancelled, with TLS when the config has a
certificate and key.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import ssl
import time
from collections.abc import Callable
from importlib import resources

from aiohttp import web

from .alerts import AlertReader
from .config import ApiConfig
from .errors import ApiConfigError
from .geofences import GeofenceStore
from .keys import ALERTS, CLOCK, CONFIG, COUNTERS, GEOFENCES, HUB, LAKE, LIMITER, OIDC, STATE, TOKENS, VEHICLE_LIST, VIEWS
from .middleware import authenticate, errors
from .oidc import OidcVerifier
from .openapi import spec
from .ratelimit import RateLimiter
from .routes_fleet import routes as fleet_routes
from .routes_vehicles import routes as vehicle_routes
from .series import LakeReader
from .state import StateReader
from .stream import Hub, poll
from .tokens import TokenStore
from .views import ViewCache

log = logging.getLogger(__name__)

STATIC = resources.files("fleet_api") / "static"


async def _index(request: web.Request) -> web.Response:
    html = (STATIC / "index.html").read_text()
    tile = request.app[CONFIG].tile_url.replace("&", "&amp;").replace('"', "&quot;")
    return web.Response(text=html.replace("{{TILE_URL}}", tile), content_type="text/html",
                        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
                                 "Content-Security-Policy": _csp(request.app[CONFIG].tile_url)})


def _csp(tile_url: str) -> str:
    img = "'self' data:"
    if tile_url.startswith("http"):
        img += " " + "/".join(tile_url.split("/")[:3])
    return f"default-src 'self'; img-src {img}; style-src 'self' 'unsafe-inline'; object-src 'none'"


async def _openapi(request: web.Request) -> web.Response:
    return web.json_response(spec())


async def _views_task(app: web.Application):
    """Keep the batch views fresh: at once, then every views_refresh_s when the lake changed."""
    views = app[VIEWS]

    async def loop() -> None:
        while True:
            try:
                await asyncio.to_thread(views.refresh)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # logged and shown by /health; the last good snapshot stays
                views.error = f"views: {exc}"
                log.warning("views refresh failed: %s", exc)
            await asyncio.sleep(app[CONFIG].views_refresh_s)

    task = asyncio.create_task(loop(), name="views")
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def _live_task(app: web.Application):
    task = asyncio.create_task(poll(app), name="live")
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def _close_sources(app: web.Application):
    yield
    app[STATE].close()
    app[ALERTS].close()
    app[TOKENS].close()
    if app[LAKE] is not None:
        app[LAKE].close()


def make_app(config: ApiConfig, clock: Callable[[], float] = time.time) -> web.Application:
    """The API and dashboard over ``config``'s sources (raises :class:`ApiConfigError` when it cannot start)."""
    if not config.tokens_path.exists() and config.oidc is None:
        raise ApiConfigError(f"{config.source}: tokens: no token database at {config.tokens_path}"
                             f" (create a token: dcm api token create --config ... --scope admin)")
    tokens = TokenStore(config.tokens_path)
    if tokens.active() == 0 and config.oidc is None:
        tokens.close()
        raise ApiConfigError(f"{config.source}: tokens: no active token in {config.tokens_path}"
                             f" (create one: dcm api token create --config ... --scope admin)")
    app = web.Application(middlewares=[errors, authenticate], client_max_size=1 << 20)
    app[CONFIG] = config
    app[CLOCK] = clock
    app[TOKENS] = tokens
    app[OIDC] = OidcVerifier(config.oidc) if config.oidc else None
    rl = config.rate_limit
    app[LIMITER] = RateLimiter(rl.per_s, rl.burst, rl.max_tokens)
    app[COUNTERS] = collections.Counter()
    app[STATE] = StateReader(config.sink_state)
    app[LAKE] = LakeReader(config.lake, config.max_points, config.series_cache_mb * 2**20) if config.lake else None
    app[ALERTS] = AlertReader(config.alerts, config.secret)
    app[VIEWS] = ViewCache(config)
    app[GEOFENCES] = GeofenceStore(config.rules)
    app[HUB] = Hub()
    app[VEHICLE_LIST] = {}
    app[STATE].refresh(full=True)
    app.router.add_get("/", _index)
    app.router.add_get("/index.html", _index)
    app.router.add_get("/api/v1/openapi.json", _openapi)
    app.router.add_static("/static/", STATIC, append_version=False)
    app.add_routes(vehicle_routes)
    app.add_routes(fleet_routes)
    app.cleanup_ctx.extend([_close_sources, _views_task, _live_task])
    return app


def ssl_context(config: ApiConfig) -> ssl.SSLContext | None:
    if config.tls_cert is None or config.tls_key is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(str(config.tls_cert), str(config.tls_key))
    except (OSError, ssl.SSLError) as exc:
        raise ApiConfigError(f"{config.source}: tls_cert/tls_key: cannot load: {exc}") from None
    return ctx


async def serve(app: web.Application, config: ApiConfig, on_bound: Callable[[str], None] | None = None,
                stop: asyncio.Event | None = None) -> None:
    """Serve until ``stop`` is set (or forever); ``on_bound`` gets the base URL (port 0 resolved)."""
    ctx = ssl_context(config)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port, ssl_context=ctx)
        await site.start()
        host, port = runner.addresses[0][:2]
        url = f"{'https' if ctx else 'http'}://{'[' + host + ']' if ':' in host else host}:{port}"
        log.info("fleet API on %s", url)
        if on_bound:
            on_bound(url)
        await (stop.wait() if stop else asyncio.Event().wait())
    finally:
        await runner.cleanup()
