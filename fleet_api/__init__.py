"""The fleet API and dashboard (``dcm api``): authenticated JSON over the lake, the sink's latest
state, the speed layer's alerts and the batch layer's views, plus one web page.

Modules: :mod:`~fleet_api.config` (the TOML), :mod:`~fleet_api.tokens` (hashed bearer tokens with
scopes), :mod:`~fleet_api.access` (what a token may see), :mod:`~fleet_api.ratelimit`,
:mod:`~fleet_api.middleware` (typed errors to HTTP, authentication, rate limits, in one place),
:mod:`~fleet_api.sources` (reads: latest state, lake series, alerts, batch views),
:mod:`~fleet_api.geofences` (the fence store the rules engine reads), the routes
(:mod:`~fleet_api.routes`), :mod:`~fleet_api.stream` (Server-Sent Events), :mod:`~fleet_api.openapi`
and :mod:`~fleet_api.app` (the aiohttp application). Imports ``minute_packet``, ``speed_layer`` and
``batch_layer`` (read side) only; never the sink, the gateway, the simulator or ``dcm``.
"""
