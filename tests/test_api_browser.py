"""The dashboard in a real browser (Debian's headless Chromium through selenium) over the API on a real
lake, latest state and alert store: no console errors, every vehicle with a position on the map in
its status colour, an injected alert arriving live and acknowledged from the page (the speed layer's
store says so), a trip opened and its route and harsh-event pins drawn. Screenshots go to the test
artefacts folder (``test-artifacts/`` or ``$DCM_TEST_ARTIFACTS``)."""
from __future__ import annotations

import time

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from fleet_api.app import make_app
from fleet_api.config import load_config
from fleet_api.tokens import TokenStore
from helpers.api_world import VINS, build_world, call, masked, running
from helpers.browser import chrome, console_errors, screenshot
from speed_layer.rules import AlertChange
from speed_layer.store import Store

STATUS_COLOURS = {"moving": "#1a9850", "parked": "#2c7bb6", "offline": "#9e9e9e"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("api-browser"))


@pytest.fixture(scope="module")
def token(world):
    store = TokenStore(load_config(world.config_path).tokens_path)
    text = store.create(["read"], 3600, "browser")[1]
    store.close()
    return text


@pytest.fixture(scope="module")
def server(world, token):
    cfg = load_config(world.config_path)
    with running(make_app(cfg, clock=lambda: world.end_t + 30), cfg) as s:
        yield s


@pytest.fixture(scope="module")
def page(server, token):
    driver = chrome()
    try:
        driver.get(f"{server.url}/#token={token}")
        WebDriverWait(driver, 60).until(lambda d: d.execute_script("return document.body.dataset.ready") == "1")
        yield driver
    finally:
        driver.quit()


def test_the_page_loads_with_no_console_errors_and_shows_the_vehicles(page, server, token):
    vehicles = call(server.url + "/api/v1/vehicles", token)[1]["items"]
    placed = {v["id"]: v["status"] for v in vehicles if v["position"]}
    assert len(placed) == 3
    markers = page.find_elements(By.CSS_SELECTOR, "path.vehicle-marker")
    assert len(markers) == len(placed)
    got = {m.get_attribute("data-vehicle"): m.get_attribute("fill") for m in markers}
    assert got == {v: STATUS_COLOURS[s] for v, s in placed.items()}
    assert "#" not in page.current_url  # the token left the address bar
    tiles = page.find_element(By.ID, "tiles").text
    assert "4\ntrips 2026" in tiles
    assert len(page.find_elements(By.CSS_SELECTOR, "#leaderboard li")) == 3
    screenshot(page, "dashboard-loaded")
    assert console_errors(page) == []


def test_an_injected_alert_arrives_live_and_is_acknowledged_from_the_page(page, world):
    store = Store(world.root / "rules-0.sqlite")
    change = AlertChange("speeding", "speeding", "browser", "open", world.end_t, None, {"peak_kmh": 151.0})
    rec = change.record(VINS[2])
    with store.transaction():
        store.upsert_alert(VINS[2], (world.end_t, b"\1" * 16, 20_000), 0, rec)
    store.close()
    item = WebDriverWait(page, 20).until(ec.presence_of_element_located(
        (By.CSS_SELECTOR, f'#alerts li[data-alert="{rec["id"]}"]')))
    assert "speeding" in item.text and "S-3" in item.text
    screenshot(page, "dashboard-alert")
    def click_ack(d) -> bool:  # the feed is redrawn when the live stream or a poll brings news
        try:
            d.find_element(By.CSS_SELECTOR, f'#alerts li[data-alert="{rec["id"]}"] button.ack').click()
            return True
        except StaleElementReferenceException:
            return False
    WebDriverWait(page, 10).until(click_ack)

    def acked(d) -> bool:
        try:
            return "acked" in d.find_element(By.CSS_SELECTOR, f'#alerts li[data-alert="{rec["id"]}"]').get_attribute("class")
        except StaleElementReferenceException:
            return False
    WebDriverWait(page, 10).until(acked)
    store = Store(world.root / "rules-0.sqlite")
    assert store.alert(rec["id"])["acknowledged_at"] is not None
    store.close()
    assert console_errors(page) == []


def test_opening_a_trip_draws_its_route_and_harsh_event_pins(page, server, token):
    trips = call(server.url + "/api/v1/trips", token)[1]["items"]
    braking = next(t for t in trips if t["vehicle"] == masked(VINS[1]))  # one hard brake
    page.find_element(By.CSS_SELECTOR, f'#trips tr[data-trip="{braking["trip_id"]}"]').click()
    WebDriverWait(page, 20).until(lambda d: d.execute_script("return document.body.dataset.trip") == braking["trip_id"])
    route = page.find_elements(By.CSS_SELECTOR, "path.trip-route")
    pins = page.find_elements(By.CSS_SELECTOR, "path.event-pin")
    detail = call(server.url + f"/api/v1/trips/{braking['trip_id']}", token)[1]
    assert len(route) == 1 and "L" in route[0].get_attribute("d") and route[0].size["width"] > 100  # drawn, long
    assert len(pins) == len(detail["route"]["features"]) - 1 >= 1
    screenshot(page, "dashboard-trip")
    # the vehicle panel: back to the whole fleet, click the vehicle's marker
    page.execute_script("dcmDashboard.fitVehicles()")
    time.sleep(0.5)
    page.find_element(By.CSS_SELECTOR, f'path.vehicle-marker[data-vehicle="{masked(VINS[0])}"]').click()
    WebDriverWait(page, 20).until(lambda d: "km" in d.find_element(By.ID, "vehicle").text)
    panel = page.find_element(By.ID, "vehicle").text
    assert "N-1" in panel and "parked" in panel and "DTCs\nnone" in panel
    time.sleep(0.5)
    screenshot(page, "dashboard-vehicle")
    assert console_errors(page) == []
