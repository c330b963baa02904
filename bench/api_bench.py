"""``dcm bench api``: latency of the fleet API on a 1,000-vehicle lake, and the dashboard's first render.

The fleet simulator's packet mode generates ``--vehicles`` vehicles for ``--minutes`` (both models,
every scenario) plus one vehicle driving a whole day at 1 Hz; a real :class:`cloud_sink.service.Sink`
stores them (bucket layout) through ``ingest`` (no broker). Operational tables give every vehicle a
fleet and a driver. ``dcm api`` then runs in its own process and ``--clients`` concurrent aiohttp
clients call each endpoint ``--requests`` times after a warm-up:

* ``/api/v1/vehicles?limit=1000`` (status of every vehicle from the sink's latest state),
* ``/api/v1/vehicles/{id}/series`` over the day vehicle's 86,400 seconds (downsampled to 2,000 points):
  ``series_day_1hz`` with a different range end in every request (no answer from the answer
  cache; the vehicle's columns, read from the lake at the first request, are kept in memory),
  ``series_day_1hz_repeated`` one range again and again (the API's answer cache),
* ``series_first_touch``: every request another fleet vehicle's day (1 h of data in the bucket files
  of the day: each request reads the lake; no cache of the API can answer it),
* ``/api/v1/scores?period=month`` (the leaderboard from the batch layer's views).

``first_render_ms``: headless Chromium (Debian's, through selenium) from navigation to the page's
``data-ready`` (vehicles, alerts, trips, leaderboard and tiles drawn), median of ``--renders`` loads.
Goal (issue 14): p99 under 200 ms for each endpoint.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

T0 = 1_767_225_600  # 2026-01-01
SECRET = b"bench-api-secret"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vehicles", type=int, default=1000)
    p.add_argument("--minutes", type=int, default=60, help="minutes of driving of the fleet")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients")
    p.add_argument("--requests", type=int, default=200, help="requests per endpoint")
    p.add_argument("--renders", type=int, default=3, help="dashboard loads in Chromium (0: skip)")
    p.add_argument("--workdir", type=Path, help="keep the lake and the API files here")


DAY_VEHICLE = "DAY0000V1HZ"


def _day_hour(p):
    """Hour h of the day vehicle is the first hour of the fleet's vehicle h (the generator costs about as
    much per minute window as per vehicle, so one vehicle's 1,440 windows would take minutes)."""
    import dataclasses

    h = int(p.vehicle_id[-6:])
    return dataclasses.replace(p, vehicle_id=DAY_VEHICLE, boot_id=b"\x01" * 16, seq=h * 60 + (p.start_time - T0) // 60,
                               start_time=p.start_time + h * 3600)


def _build(work: Path, vehicles: int, minutes: int) -> dict[str, Any]:
    import dbc as dbc_files
    from cloud_sink.config import SinkConfig
    from cloud_sink.intake import Incoming
    from cloud_sink.service import Sink
    from dcm.broker import BrokerUrl
    from minute_packet import Topics, encode
    from minute_packet.masking import mask_vehicle
    from simulator.fleet_generator import FleetGenerator
    from simulator.fleet_spec import FleetSpec, VehicleModelSpec

    t = time.monotonic()
    sink = Sink(SinkConfig(broker=BrokerUrl("127.0.0.1", 1), lake_root=work / "lake", state_path=work / "sink.sqlite",
                           quarantine_dir=work / "quarantine", vehicle_secret=SECRET, layout="bucket", buckets=8,
                           roll_interval_s=3600))
    topics = Topics()
    ids: set[str] = set()
    packets = since_flush = 0
    for spec in (FleetSpec(vehicles=vehicles, duration_s=minutes * 60, start_time=T0 + 8 * 3600, seed=1),
                 FleetSpec(vehicles=24, duration_s=3600, start_time=T0, seed=2, id_prefix="DAY",
                           models=(VehicleModelSpec("reference-car", dbc_files.REFERENCE_DBC, 1.0),))):
        gen = FleetGenerator(spec)
        sink.ingest([Incoming(topics.schema(s.fingerprint), s.to_json(), 0, 1) for s in gen.schemas.values()])
        msgs: list[Incoming] = []
        for gw in gen:  # staged 2,000 at a time (each ingest is one durable commit), written 15,000 at a time
            pk = gw.packets if spec.id_prefix != "DAY" else [_day_hour(p) for p in gw.packets]
            msgs += [Incoming(topics.telemetry(p.vehicle_id), encode(p), packets + i, 1)
                     for i, p in enumerate(pk)]
            packets += len(gw.packets)
            ids.update(p.vehicle_id for p in pk)
            if len(msgs) >= 2000:
                sink.ingest(msgs)
                since_flush += len(msgs)
                msgs = []
            if since_flush >= 15_000:
                sink.flush()
                since_flush = 0
        if msgs:
            sink.ingest(msgs)
        sink.flush()
    sink.staging.close()
    vins = sorted(set(ids))
    ops = work / "ops"
    ops.mkdir(exist_ok=True)
    (ops / "vehicles.csv").write_text("vin,plate,model,fleet\n" + "".join(
        f"{v},P-{i:05d},,fleet-{i % 4}\n" for i, v in enumerate(vins)))
    (ops / "devices.csv").write_text("device_id,vin,installed_from\n")
    (ops / "drivers.csv").write_text("driver_id,name\n" + "".join(f"D{i:05d},Driver {i}\n" for i in range(len(vins))))
    (ops / "assignments.csv").write_text("driver_id,vin,valid_from,valid_to\n" + "".join(
        f"D{i:05d},{v},2025-01-01,\n" for i, v in enumerate(vins)))
    return {"packets": packets, "vehicles": len(vins), "day_vehicle": mask_vehicle(SECRET, DAY_VEHICLE),
            "build_s": round(time.monotonic() - t, 1),
            "_fleet": [mask_vehicle(SECRET, v) for v in vins if v != DAY_VEHICLE]}


def _start_api(work: Path) -> tuple[subprocess.Popen, str, str]:
    from fleet_api.tokens import TokenStore

    (work / "key.bin").write_bytes(SECRET)
    (work / "api.toml").write_text("""listen = "127.0.0.1:0"
tokens = "tokens.sqlite"
secret_file = "key.bin"
[sources]
lake = "lake"
sink_state = ["sink.sqlite"]
operational = "csv:ops"
views_refresh_s = 3600
[rate_limit]
per_s = 100000
burst = 100000
""")
    store = TokenStore(work / "tokens.sqlite")
    token = store.create(["admin"], 86400, "bench")[1]
    store.close()
    proc = subprocess.Popen([sys.executable, "-m", "dcm.cli", "api", "--config", str(work / "api.toml")],
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    if "serving" not in line:
        proc.kill()
        raise RuntimeError(f"dcm api did not start: {line}{proc.stderr.read()}")
    url = line.split("serving ", 1)[1].strip().rstrip("/")
    for _ in range(1200):  # the views are computed in the background
        with urllib.request.urlopen(url + "/health", timeout=10) as r:
            if json.load(r)["views_ready"]:
                break
        time.sleep(0.5)
    return proc, url, token


async def _latency(url: str, token: str, path: str | Callable[[int], str], clients: int, requests: int
                   ) -> dict[str, float]:
    """Latency of ``requests`` calls from ``clients`` concurrent clients; ``path`` may depend on the
    request's number (distinct requests: no answer can come from the API's cache)."""
    import aiohttp

    times: list[float] = []
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as s:
        path_of = path if callable(path) else (lambda i: path)
        for i in range(min(10, requests)):  # warm-up (connections, the lake's footers)
            async with s.get(url + path_of(-1 - i)) as r:
                await r.read()
        todo = iter(range(requests))

        async def worker() -> None:
            for i in todo:
                t = time.perf_counter()
                async with s.get(url + path_of(i)) as r:
                    await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"{path}: HTTP {r.status}")
                times.append((time.perf_counter() - t) * 1000)

        t_all = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - t_all
    times.sort()
    return {"p50_ms": round(statistics.median(times), 1), "p99_ms": round(times[int(0.99 * (len(times) - 1))], 1),
            "max_ms": round(times[-1], 1), "requests_per_s": round(len(times) / wall, 1)}


def _first_render(url: str, token: str, renders: int) -> float | None:
    from bench.browser import chrome

    driver = chrome()
    out = []
    try:
        for _ in range(renders):
            driver.get("about:blank")
            driver.get(f"{url}/#token={token}")
            for _ in range(600):
                ms = driver.execute_script("return document.body && document.body.dataset.readyMs")
                if ms:
                    out.append(float(ms))
                    break
                time.sleep(0.05)
    finally:
        driver.quit()
    return round(statistics.median(out), 1) if out else None


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="dcm-bench-api-") as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        result: dict[str, Any] = _build(work, args.vehicles, args.minutes)
        proc, url, token = _start_api(work)
        try:
            result["clients"] = args.clients
            result["requests_per_endpoint"] = args.requests
            day, fleet = result["day_vehicle"], result.pop("_fleet")
            series = f"/api/v1/vehicles/{day}/series?signals=VehicleSpeed&from={T0}&to="
            for name, path in (("vehicles_list", "/api/v1/vehicles?limit=1000"),
                               # every request a different range end: no answer from the answer cache
                               # (the columns of the vehicle's files, read at the first request, answer)
                               ("series_day_1hz", lambda i: f"{series}{T0 + 86400 - 100 - i}"),
                               # every request another vehicle's day: each one reads the lake (first touch)
                               ("series_first_touch", lambda i: f"/api/v1/vehicles/{fleet[i % len(fleet)]}/series"
                                                                f"?signals=VehicleSpeed&from={T0}&to={T0 + 86400}"),
                               # one range asked again and again (viewers of one vehicle): the cache answers
                               ("series_day_1hz_repeated", f"{series}{T0 + 86400}"),
                               ("scores", "/api/v1/scores?period=month")):
                result[name] = asyncio.run(_latency(url, token, path, args.clients, args.requests))
            if args.renders:
                result["first_render_ms"] = _first_render(url, token, args.renders)
        finally:
            proc.terminate()
            proc.wait(30)
        result["goal_p99_ms"] = 200
        result["goal_met"] = all(result[k]["p99_ms"] < 200
                                 for k in ("vehicles_list", "series_day_1hz", "series_first_touch", "scores"))
    return result
