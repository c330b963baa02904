"""``dcm demo --serve``: the fleet API and dashboard over the demo's own lake and sink state.

:func:`demo_api` writes the API's TOML, the masking key and a token database into the demo's
work folder and returns the configuration and a fresh ``read`` token; :func:`serve_demo` runs the
API until Ctrl-C, printing the dashboard's URL (the token in its fragment) and the token.
"""
from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from .demo import demo_secret

TOKEN_TTL_S = 7 * 86400


def demo_api(work: Path, listen: str = "127.0.0.1:8480"):
    """(config, read token) for the API over the demo in ``work``."""
    from fleet_api.config import load_config
    from fleet_api.tokens import TokenStore

    api = work / "api"
    api.mkdir(parents=True, exist_ok=True)
    demo_secret(work)  # the sink's throw-away key, made by the demo run
    (api / "api.toml").write_text(f"""# written by dcm demo --serve
listen = "{listen}"
tokens = "tokens.sqlite"
secret_file = "../sink/mask.key"
[sources]
lake = "../lake"
sink_state = ["../sink/state.sqlite"]
alerts = ["../rules/rules-0.sqlite"]
rules = "../rules/rules.toml"
operational = "csv:../ops"
views_refresh_s = 60
""")
    config = load_config(api / "api.toml")
    store = TokenStore(config.tokens_path)
    try:
        _, token = store.create(["read"], TOKEN_TTL_S, "dcm demo --serve")
    finally:
        store.close()
    return config, token


def serve_demo(work: Path, listen: str) -> int:
    from fleet_api.app import make_app, serve

    from fleet_api.keys import VIEWS

    config, token = demo_api(work, listen)
    app = make_app(config)
    print("  computing the batch views (trips, scores) for the dashboard", file=sys.stderr, flush=True)
    app[VIEWS].refresh()  # before the URL is printed: the page's first load finds them ready

    def bound(url: str) -> None:
        print(f"\ndashboard  {url}/#token={token}\nread token {token}\n(API: {url}/api/v1/openapi.json;"
              f" data in {work}; Ctrl-C stops)", file=sys.stderr, flush=True)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(app, config, bound, stop)

    asyncio.run(main())
    return 0
