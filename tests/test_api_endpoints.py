"""Fleet API endpoints against a lake and latest state written by a real sink, an alert store written by
the real speed-layer sequencer, the batch layer's views and operational tables: vehicle status,
pagination, series downsampling checked against the packets' own values, alerts and acknowledging
through the speed layer's store, trips with GeoJSON routes, scores, yearly views, geofence CRUD
reaching the rules engine, rules, and the live stream."""
from __future__ import annotations

import json
import math
import threading
import time
import urllib.request

import numpy as np
import pytest

from fleet_api.app import make_app
from fleet_api.config import load_config
from fleet_api.tokens import TokenStore
from helpers.api_world import VINS, build_world, call, masked, running
from helpers.batch_lake import T0
from speed_layer.config import load_rules
from speed_layer.engine import VehicleRules
from speed_layer.rules import AlertChange
from speed_layer.store import Store


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("api-endpoints"))


@pytest.fixture(scope="module")
def admin(world):
    store = TokenStore(load_config(world.config_path).tokens_path)
    text = store.create(["admin"], 3600, "tests")[1]
    store.close()
    return text


@pytest.fixture(scope="module")
def server(world, admin):
    cfg = load_config(world.config_path)
    with running(make_app(cfg, clock=lambda: world.end_t + 30), cfg) as s:
        yield s


def get(server, token, path):
    status, body, _ = call(server.url + path, token)
    assert status == 200, (path, body)
    return body


def test_vehicles_status_model_fleet_and_last_seen(server, admin, world):
    items = {v["id"]: v for v in get(server, admin, "/api/v1/vehicles")["items"]}
    assert set(items) == set(world.ids)
    got = {vin: (items[masked(vin)]["status"], items[masked(vin)]["fleet"], items[masked(vin)]["plate"]) for vin in VINS}
    assert got == {VINS[0]: ("parked", "north", "N-1"), VINS[1]: ("offline", "north", "N-2"),
                   VINS[2]: ("moving", "south", "S-3"), VINS[3]: ("offline", "south", "S-4")}
    assert items[masked(VINS[3])]["last_seen"] is None and items[masked(VINS[3])]["position"] is None
    last = int(_physical(world, VINS[2], "VehicleSpeed")[0][-1])
    assert items[masked(VINS[2])]["last_seen"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(last))
    assert all(items[masked(v)]["model"] == "ignition-car" for v in VINS)
    assert [v["id"] for v in get(server, admin, "/api/v1/vehicles?status=moving")["items"]] == [masked(VINS[2])]


def test_pagination_walks_every_item_once(server, admin, world):
    seen, cursor, pages = [], None, 0
    while True:
        body = get(server, admin, "/api/v1/vehicles?limit=3" + (f"&cursor={cursor}" if cursor else ""))
        seen += [v["id"] for v in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 2 and sorted(seen) == sorted(world.ids) and len(set(seen)) == len(seen)
    trips = get(server, admin, "/api/v1/trips")["items"]
    first = get(server, admin, "/api/v1/trips?limit=2")
    second = get(server, admin, f"/api/v1/trips?limit=2&cursor={first['next_cursor']}")
    assert [t["trip_id"] for t in first["items"] + second["items"]] == [t["trip_id"] for t in trips[:4]]
    assert call(server.url + "/api/v1/trips?cursor=%%%", admin)[0] == 400
    assert call(server.url + "/api/v1/trips?limit=0", admin)[0] == 400


def test_latest_state_of_one_vehicle(server, admin, world):
    body = get(server, admin, f"/api/v1/vehicles/{masked(VINS[0])}/latest")
    assert body["status"] == "parked" and body["active_dtcs"] == []
    assert body["odometer_km"] == pytest.approx(_physical(world, VINS[0], "Odometer")[1][-1])
    assert set(body["signals"]) >= {"VehicleSpeed", "Latitude", "Longitude", "Odometer"}


def _schema():
    import dbc
    from minute_packet import Collection, schema_from_dbc
    from helpers.batch_lake import IGNITION_SIGNALS

    return schema_from_dbc(dbc.load(dbc.REFERENCE_DBC), Collection(signals=frozenset(IGNITION_SIGNALS)))


def _physical(world, vin, signal):
    """(seconds, physical values) of one signal over a vehicle's packets, from the packets themselves."""
    schema = _schema()
    i = [c.name for c in schema.columns].index(signal)
    ts, vs = [], []
    for p in world.packets[vin]:
        phys = schema.columns[i].physical(p.values[i])
        for r in range(p.rows):
            if p.present[i][r]:
                ts.append(p.start_time + r)
                vs.append(float(phys[r]))
    return np.array(ts), np.array(vs)


def test_series_is_downsampled_with_min_max_mean_per_step(server, admin, world):
    vid = masked(VINS[0])
    day = get(server, admin, f"/api/v1/vehicles/{vid}/series?signals=VehicleSpeed,Odometer"
                             f"&from={T0}&to={T0 + 86400}")
    assert day["step"] == math.ceil(86400 / 500) and 0 < len(day["t"]) <= 500  # max_points = 500 in the world
    ts, speed = _physical(world, VINS[0], "VehicleSpeed")
    s = day["signals"]["VehicleSpeed"]
    assert sum(s["count"]) == len(ts) and max(s["max"]) == pytest.approx(speed.max())
    # an hour at step 60: every bucket equals the same aggregate computed from the packets
    t0 = T0 + 3600
    hour = get(server, admin, f"/api/v1/vehicles/{vid}/series?signals=VehicleSpeed&from={t0}&to={t0 + 3600}&step=60")
    assert hour["step"] == 60
    for k, b in enumerate(hour["t"]):
        sel = (ts >= b) & (ts < b + 60)
        h = hour["signals"]["VehicleSpeed"]
        assert (h["min"][k], h["max"][k], h["count"][k]) == (pytest.approx(speed[sel].min()),
                                                             pytest.approx(speed[sel].max()), int(sel.sum()))
        assert h["mean"][k] == pytest.approx(speed[sel].mean(), abs=1e-5)
    assert len(hour["t"]) == len(np.unique((ts[(ts >= t0) & (ts < t0 + 3600)] - t0) // 60))
    for bad in ("signals=NoSuchSignal", "signals=ts", "signals=VehicleSpeed&step=0",
                f"signals=VehicleSpeed&from={t0}&to={t0}"):
        status, body, _ = call(server.url + f"/api/v1/vehicles/{vid}/series?{bad}&from={t0}&to={t0 + 60}"
                               if "from" not in bad else server.url + f"/api/v1/vehicles/{vid}/series?{bad}", admin)
        assert status == 400 and body["error"] == "bad_request", bad


def test_alerts_from_the_speed_layer_and_acknowledge(server, admin, world):
    alerts = get(server, admin, "/api/v1/alerts?limit=1000")["items"]
    kinds = {(a["vehicle"], a["kind"]) for a in alerts}
    assert (masked(VINS[0]), "speeding") in kinds and (masked(VINS[0]), "harsh_braking") in kinds
    assert not any(v in json.dumps(alerts) for v in VINS)  # raw ids never leave the API
    starts = [(a["start"], a["id"]) for a in alerts]
    assert starts == sorted(starts, reverse=True)
    one = get(server, admin, "/api/v1/alerts?limit=1")
    two = get(server, admin, f"/api/v1/alerts?limit=1&cursor={one['next_cursor']}")
    assert [a["id"] for a in one["items"] + two["items"]] == [a["id"] for a in alerts[:2]]
    speeding = next(a for a in alerts if a["kind"] == "speeding")
    assert speeding["acknowledged_at"] is None
    status, body, _ = call(server.url + f"/api/v1/alerts/{speeding['id']}/ack", admin, "POST")
    assert status == 200 and body["acknowledged"] is True and body["alert"]["acknowledged_at"] is not None
    store = Store(world.root / "rules-0.sqlite")
    assert store.alert(speeding["id"])["acknowledged_at"] is not None  # in the speed layer's own store
    store.close()
    assert call(server.url + f"/api/v1/alerts/{speeding['id']}/ack", admin, "POST")[1]["acknowledged"] is False
    acked = get(server, admin, "/api/v1/alerts?state=acknowledged")["items"]
    assert [a["id"] for a in acked] == [speeding["id"]]
    assert speeding["id"] not in [a["id"] for a in get(server, admin, "/api/v1/alerts?state=unacknowledged")["items"]]
    assert call(server.url + "/api/v1/alerts/nope/ack", admin, "POST")[0] == 404
    assert call(server.url + "/api/v1/alerts?state=bogus", admin)[0] == 400


def test_trips_and_a_trip_route_with_harsh_events(server, admin, world):
    trips = get(server, admin, "/api/v1/trips")["items"]
    assert [t["vehicle"] for t in trips].count(masked(VINS[0])) == 2 and len(trips) == 4
    assert {t["driver"] for t in get(server, admin, "/api/v1/trips?driver=D1")["items"]} == {"D1"}
    assert len(get(server, admin, f"/api/v1/trips?vehicle={masked(VINS[0])}&from={T0 + 7200}")["items"]) == 1
    first = min((t for t in trips if t["vehicle"] == masked(VINS[0])), key=lambda t: t["start_t"])
    body = get(server, admin, f"/api/v1/trips/{first['trip_id']}")
    route, *points = body["route"]["features"]
    coords = route["geometry"]["coordinates"]
    assert route["geometry"]["type"] == "LineString" and 2 <= len(coords) <= 500
    assert coords[0] == pytest.approx([first["start_lon"], first["start_lat"]], abs=1e-6)
    assert coords[-1] == pytest.approx([first["end_lon"], first["end_lat"]], abs=2e-3)
    assert [p["properties"]["kind"] for p in points] == [e["kind"] for e in body["events"]]
    assert "harsh_brake" in [p["properties"]["kind"] for p in points]
    assert call(server.url + "/api/v1/trips/nope", admin)[0] == 404


def test_scores_leaderboard_and_yearly_views(server, admin):
    body = get(server, admin, "/api/v1/scores?period=month")
    scores = [r["score"] for r in body["items"]]
    assert scores == sorted(scores, reverse=True) and [r["rank"] for r in body["items"]] == [1, 2, 3]
    assert all(r["explanation"] for r in body["items"])
    assert {r["driver"] for r in get(server, admin, "/api/v1/scores?fleet=south")["items"]} == {"D3"}
    assert call(server.url + "/api/v1/scores?period=week", admin)[0] == 400
    yearly = get(server, admin, "/api/v1/views/yearly")
    trips = get(server, admin, "/api/v1/trips")["items"]
    assert yearly["ytd"]["year"] == 2026 and yearly["ytd"]["trips"] == len(trips)
    assert yearly["ytd"]["distance_km"] == pytest.approx(sum(t["distance_km"] for t in trips), abs=1e-3)
    assert sum(r["trips"] for r in yearly["km_per_vehicle_year"]) == len(trips)


def test_geofence_crud_reaches_the_rules_engine(server, admin, world):
    lat, lon = _physical(world, VINS[2], "Latitude")[1], _physical(world, VINS[2], "Longitude")[1]
    # a fence around the middle of VIN3's drive: the rules engine must see it enter and leave
    mid = len(lat) // 2
    body = {"type": "Feature", "geometry": None, "properties": {"hysteresis_m": 5}}
    assert call(server.url + "/api/v1/geofences/yard", admin, "PUT", body)[0] == 400
    status, resp, _ = call(server.url + "/api/v1/geofences/yard", admin, "PUT",
                           {"circle": {"lat": lat[mid], "lon": lon[mid], "radius_m": 400}, "hysteresis_m": 5})
    assert status == 200, resp
    assert [f["properties"]["name"] for f in get(server, admin, "/api/v1/geofences")["features"]] == ["yard"]
    rules = load_rules(world.root / "rules.toml")  # exactly how a rule worker loads them
    assert [f.name for f in rules.fences] == ["yard"] and "geofence" in [r.name for r in rules.rules]
    sch = _schema()
    assert {p.fingerprint for p in world.packets[VINS[2]]} == {sch.fingerprint}
    vr = VehicleRules(rules, VINS[2], sch)
    state: dict = {}
    changes: list[AlertChange] = []
    for p in world.packets[VINS[2]]:
        changes += vr.apply(state, p)
    assert {c.kind for c in changes} >= {"geofence_enter", "geofence_exit"}
    assert "geofence" in [r["name"] for r in get(server, admin, "/api/v1/rules")["rules"]]
    assert call(server.url + "/api/v1/geofences/yard", admin, "DELETE")[0] == 200
    assert load_rules(world.root / "rules.toml").fences == ()
    assert call(server.url + "/api/v1/geofences/yard", admin, "DELETE")[0] == 404


def test_rules_lists_the_deployments_rules(server, admin):
    body = get(server, admin, "/api/v1/rules")
    assert "speeding" in [r["name"] for r in body["rules"]] and body["hold_s"] == 30


def _listen(url: str, token: str, events: list, opened: threading.Event, until: threading.Event) -> None:
    req = urllib.request.Request(url + "/api/v1/stream", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=4) as resp:
            opened.set()
            event = None
            for line in resp:
                line = line.decode().rstrip("\n")
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    events.append((event, json.loads(line[6:])))
                if until.is_set():
                    return
    except OSError:  # the read timeout ends a quiet stream
        return


def test_the_stream_sends_new_alerts_of_visible_vehicles_only(server, admin, world):
    store = TokenStore(load_config(world.config_path).tokens_path)
    north = store.create(["fleet:north"], 600)[1]
    store.close()
    got_admin, got_north = [], []
    opened = [threading.Event(), threading.Event()]
    done = threading.Event()
    threads = [threading.Thread(target=_listen, args=(server.url, tok, ev, op, done), daemon=True)
               for tok, ev, op in ((admin, got_admin, opened[0]), (north, got_north, opened[1]))]
    for th in threads:
        th.start()
    assert all(o.wait(10) for o in opened)
    time.sleep(1.5)  # one poller round after the subscriptions
    store = Store(world.root / "rules-0.sqlite")
    change = AlertChange("speeding", "speeding", "injected", "open", world.end_t, None, {"peak_kmh": 150.0})
    with store.transaction():
        store.upsert_alert(VINS[2], (world.end_t, b"\0" * 16, 10_000), 0, change.record(VINS[2]))
    store.close()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not any(d.get("episode") == "injected" for _, d in got_admin):
        time.sleep(0.1)
    time.sleep(1.5)
    done.set()
    for th in threads:
        th.join(10)
    injected = [d for e, d in got_admin if e == "alert" and d["episode"] == "injected"]
    assert injected and injected[0]["vehicle"] == masked(VINS[2]) and injected[0]["status"] == "open"
    assert not any(d.get("vehicle") == masked(VINS[2]) for _, d in got_north)  # south is not north's
