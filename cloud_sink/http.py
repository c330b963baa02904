"""The sink's HTTP side: ``/metrics`` (Prometheus text format) and ``/vehicles/{masked}/latest``."""
from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from .service import Sink

log = logging.getLogger(__name__)

Sample = tuple[str, str, str, dict[str, str], float]  # name, type, help, labels, value


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render(samples: Iterable[Sample]) -> str:
    """Prometheus text exposition format (version 0.0.4)."""
    lines: list[str] = []
    described: set[str] = set()
    for name, kind, help_text, labels, value in samples:
        if name not in described:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
            described.add(name)
        label = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
        lines.append(f"{name}{{{label}}} {value:g}" if label else f"{name} {value:g}")
    return "\n".join(lines) + "\n"


SINK = web.AppKey("sink", "Sink")
TOKEN = web.AppKey("token", bytes)


@web.middleware
async def _require_token(request: web.Request, handler):
    """With a configured token, every request needs ``Authorization: Bearer <token>``."""
    token = request.app[TOKEN]
    given = request.headers.get("Authorization", "")
    scheme, _, value = given.partition(" ")
    offered = value.strip().encode("utf-8", "surrogateescape")  # any bytes a client sends: never a 500
    if not (scheme.lower() == "bearer" and hmac.compare_digest(offered, token)):
        raise web.HTTPUnauthorized(text="a bearer token is required\n", headers={"WWW-Authenticate": "Bearer"})
    return await handler(request)


async def _metrics(request: web.Request) -> web.Response:
    samples = await asyncio.to_thread(request.app[SINK].metric_samples)
    return web.Response(text=render(samples), content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})


async def _latest(request: web.Request) -> web.Response:
    masked = request.match_info["masked"]
    state = await asyncio.to_thread(request.app[SINK].staging.latest.get, masked)
    if not state:
        raise web.HTTPNotFound(text=f"no state for vehicle {masked}\n")
    body = {"vehicle": masked, "signals": {
        name: {"ts": dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(), "value": value}
        for name, (ts, value) in sorted(state.items())}}
    return web.json_response(body)


def make_app(sink: Sink, token: bytes | None = None) -> web.Application:
    """The API over ``sink``; with ``token``, every route requires it as a bearer token."""
    app = web.Application(middlewares=[_require_token] if token else [])
    app[SINK] = sink
    if token:
        app[TOKEN] = token
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/vehicles/{masked}/latest", _latest)
    return app


async def serve(sink: Sink, host: str, port: int, stop: asyncio.Event,
                on_bound: Callable[[int], None], token: bytes | None = None) -> None:
    """Serve until ``stop`` is set; ``on_bound`` gets the actual port (useful with port 0)."""
    if not token and host not in ("127.0.0.1", "::1", "localhost"):
        log.warning("HTTP API on %s without a token (http_token_file): anyone who reaches it can read it", host)
    runner = web.AppRunner(make_app(sink, token), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        sockets = runner.addresses
        on_bound(int(sockets[0][1]) if sockets else port)
        log.info("HTTP on %s:%s (/metrics, /vehicles/{masked}/latest)", host, sockets[0][1] if sockets else port)
        await stop.wait()
    finally:
        await runner.cleanup()
