"""The sink's HTTP side: ``/metrics`` (Prometheus text format) and ``/vehicles/{masked}/latest``."""
from __future__ import annotations

import asyncio
import datetime as dt
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


def make_app(sink: Sink) -> web.Application:
    async def metrics(request: web.Request) -> web.Response:
        samples = await asyncio.to_thread(sink.metric_samples)
        return web.Response(text=render(samples), content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})

    async def latest(request: web.Request) -> web.Response:
        masked = request.match_info["masked"]
        state = await asyncio.to_thread(sink.staging.latest_state, masked)
        if not state:
            raise web.HTTPNotFound(text=f"no state for vehicle {masked}\n")
        body = {"vehicle": masked, "signals": {
            name: {"ts": dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(), "value": value}
            for name, (ts, value) in sorted(state.items())}}
        return web.json_response(body)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/vehicles/{masked}/latest", latest)
    return app


async def serve(sink: Sink, host: str, port: int, stop: asyncio.Event,
                on_bound: Callable[[int], None]) -> None:
    """Serve until ``stop`` is set; ``on_bound`` gets the actual port (useful with port 0)."""
    runner = web.AppRunner(make_app(sink), access_log=None)
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
