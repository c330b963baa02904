"""``dcm demo --serve``: the demo's fleet in the dashboard, in headless Chromium, from the real command.

The demo's two CAN cars and its packet-mode fleet (4 vehicles here, with injected scenarios) go
through the sink and the rules worker; the page must show every vehicle, the alerts the rules
raised and the trips the batch views found, with no console error (no endpoint still computing)."""
from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from helpers.api_world import call
from helpers.browser import chrome, console_errors, screenshot


def test_demo_serve_shows_the_demo_fleet(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "dcm.cli", "demo", "--vehicles", "2", "--duration", "70",
                             "--fleet", "4", "--fleet-duration", "3600", "--workdir", str(tmp_path),
                             "--serve", "127.0.0.1:0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = token = None
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and token is None:
            line = proc.stderr.readline()
            if not line:
                break
            if m := re.match(r"dashboard  (\S+)/#token=(\S+)", line):
                url, token = m.group(1), m.group(2)
        assert url and token, proc.communicate(timeout=5) if proc.poll() is not None else "no URL printed"
        vehicles = call(url + "/api/v1/vehicles", token)[1]["items"]
        assert len(vehicles) == 2 + 4 and all(v["position"] for v in vehicles)
        alerts = call(url + "/api/v1/alerts?limit=200", token)[1]["items"]
        trips = call(url + "/api/v1/trips?limit=200", token)[1]["items"]
        assert alerts and trips, (alerts, trips)
        driver = chrome()
        try:
            driver.get(f"{url}/#token={token}")
            WebDriverWait(driver, 60).until(lambda d: d.execute_script("return document.body.dataset.ready") == "1")
            markers = driver.find_elements(By.CSS_SELECTOR, "path.vehicle-marker")
            assert sorted(m.get_attribute("data-vehicle") for m in markers) == sorted(v["id"] for v in vehicles)
            markers[-1].click()  # the last drawn is on top (the CAN cars start side by side)
            WebDriverWait(driver, 20).until(lambda d: "odometer" in d.find_element(By.ID, "vehicle").text)
            time.sleep(1)
            shown = {li.get_attribute("data-alert") for li in driver.find_elements(By.CSS_SELECTOR, "#alerts li")}
            assert {a["id"] for a in alerts} <= shown
            driver.find_element(By.CSS_SELECTOR, f'#trips tr[data-trip="{trips[0]["trip_id"]}"]').click()
            WebDriverWait(driver, 20).until(lambda d: d.execute_script("return document.body.dataset.trip") == trips[0]["trip_id"])
            assert driver.find_elements(By.CSS_SELECTOR, "path.trip-route")
            screenshot(driver, "demo-serve")
            assert console_errors(driver) == []
        finally:
            driver.quit()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
