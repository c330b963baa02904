"""A world for the fleet API's tests: a lake and latest state written by a real sink (``Sink.ingest``,
no MQTT), an alert store written by the real speed-layer sequencer from the same packets,
operational tables, a rules file with a geofence store, and the API served on a free port.

Vehicles (reference-car signals of ``CraftedLake``'s ignition car), data on 2026-01-01 UTC:

* ``VIN1`` (fleet north, driver D1): 01:00 a trip with a speeding stretch and a hard brake;
  13:00 a second trip, parked at the end (the fleet's last data).
* ``VIN2`` (north, D2): one trip at 01:00, nothing since: offline at the world's clock.
* ``VIN3`` (south, D3): a trip at 13:00 still driving at its last second: moving.
* ``VIN4`` (south): in the operational tables only, never seen: offline, no last_seen.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from helpers.batch_lake import SECRET, T0, CraftedLake, drive, idle, park, ramp, trace
from minute_packet import codec, encode
from minute_packet.masking import mask_vehicle

VINS = ("WDB0000000API0001", "WDB0000000API0002", "WDB0000000API0003", "WDB0000000API0004")
TRIP = [idle(20), ramp(20, 0, 80), drive(300, 80), ramp(2, 80, 40), drive(200, 40), ramp(20, 40, 0), idle(30)]
FAST = [idle(20), ramp(20, 0, 80), drive(100, 80), ramp(10, 80, 140), drive(60, 140), ramp(10, 140, 80),
        drive(200, 80), ramp(2, 80, 40), drive(100, 40), ramp(20, 40, 0), idle(30)]
STILL_DRIVING = [idle(20), ramp(20, 0, 60), drive(400, 60)]
OPS = {
    "vehicles": "vin,plate,model,fleet\n{0},N-1,ignition-car,north\n{1},N-2,ignition-car,north\n"
                "{2},S-3,ignition-car,south\n{3},S-4,ignition-car,south\n",
    "devices": "device_id,vin,installed_from\nd1,{0},2025-01-01\nd2,{1},2025-01-01\nd3,{2},2025-01-01\n",
    "drivers": "driver_id,name\nD1,Ada\nD2,Bo\nD3,Cy\n",
    "assignments": "driver_id,vin,valid_from,valid_to\nD1,{0},2025-01-01,\nD2,{1},2025-01-01,\nD3,{2},2025-01-01,\n",
}
RULES_TOML = """
geofences_file = "geofences.geojson"

[rules.speeding]
limit_kmh = 120
"""


def masked(vin: str) -> str:
    return mask_vehicle(SECRET, vin)


@dataclasses.dataclass
class World:
    root: Path
    config_path: Path
    end_t: int  # the last second of data
    packets: dict[str, list]  # vin -> its minute packets (objects)

    @property
    def ids(self) -> list[str]:
        return [masked(v) for v in VINS]


def build_world(root: Path) -> World:
    """Write everything under ``root`` and the API's TOML (``root/api.toml``)."""
    from speed_layer.config import load_rules
    from speed_layer.sequencer import Sequencer
    from speed_layer.store import Store

    lk = CraftedLake(root)
    packets = {
        VINS[0]: lk.add(VINS[0], trace(T0 + 3600, FAST), files=2) + lk.add(VINS[0], trace(T0 + 13 * 3600, TRIP + [park(120)])),
        VINS[1]: lk.add(VINS[1], trace(T0 + 3600, TRIP, lat=48.2, lon=11.6)),
        VINS[2]: lk.add(VINS[2], trace(T0 + 13 * 3600 + 600, STILL_DRIVING, lat=48.1, lon=11.5)),
    }
    lk.close()
    end_t = max(p.start_time + p.rows - 1 for ps in packets.values() for p in ps)
    ops = root / "ops"
    ops.mkdir()
    for name, text in OPS.items():
        (ops / f"{name}.csv").write_text(text.format(*VINS))
    (root / "key.bin").write_bytes(SECRET)
    (root / "rules.toml").write_text(RULES_TOML)
    # the speed layer's own sequencer over the very packets the sink stored: a real alert store
    store = Store(root / "rules-0.sqlite")
    schemas = {s.fingerprint: s for s in lk.schemas.values()}
    seq = Sequencer(store, load_rules(root / "rules.toml"), schemas.get)
    for vin in VINS[:3]:
        for p in packets[vin]:
            data = encode(p)
            with store.transaction():
                seq.ingest(data, codec.validate(data))
                seq.notifications()
    store.close()
    (root / "api.toml").write_text(f"""
listen = "127.0.0.1:0"
tokens = "tokens.sqlite"
secret_file = "key.bin"
max_points = 500
[sources]
lake = "lake"
sink_state = ["w1.sqlite"]
alerts = ["rules-0.sqlite"]
rules = "rules.toml"
operational = "csv:ops"
views_refresh_s = 3600
[rate_limit]
per_s = 1000
burst = 1000
""")
    return World(root, root / "api.toml", end_t, packets)


class ApiServer:
    """The app served on a free loopback port from a thread with its own event loop."""

    def __init__(self, app, config) -> None:
        self.app, self.config = app, config
        self.url = ""
        self._bound = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        from fleet_api.app import serve

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()

            def bound(url: str) -> None:
                self.url = url
                self._bound.set()

            await serve(self.app, self.config, bound, self._stop)

        try:
            asyncio.run(main())
        except BaseException as exc:  # reported by start()
            self.error = exc
            self._bound.set()

    def start(self, wait_views: bool = True) -> ApiServer:
        from fleet_api.keys import VIEWS

        self._thread.start()
        self._bound.wait(30)
        if self.error:
            raise self.error
        if wait_views and not self.app[VIEWS].ready.wait(120):
            raise RuntimeError(f"views not ready: {self.app[VIEWS].error}")
        return self

    def stop(self) -> None:
        if self._loop and self._stop:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


@contextlib.contextmanager
def running(app, config):
    server = ApiServer(app, config).start()
    try:
        yield server
    finally:
        server.stop()


def call(url: str, token: str | None = None, method: str = "GET", body: Any = None,
         headers: dict[str, str] | None = None) -> tuple[int, Any, dict[str, str]]:
    """(status, parsed JSON or text, headers) of one request; HTTP errors are returned, not raised."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw, status, hdrs = resp.read(), resp.status, dict(resp.headers)
    except urllib.error.HTTPError as exc:
        raw, status, hdrs = exc.read(), exc.code, dict(exc.headers)
    try:
        return status, json.loads(raw), hdrs
    except ValueError:
        return status, raw.decode(errors="replace"), hdrs
