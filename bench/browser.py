"""Headless Chromium from Debian (``chromium``, ``chromium-driver``) through selenium: for ``dcm bench api``
and the dashboard's tests (``tests/helpers/browser.py``). selenium comes with the ``test`` extra."""
from __future__ import annotations

import shutil
from pathlib import Path

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,1000")


def chromium_paths() -> tuple[str, str]:
    browser = shutil.which("chromium") or "/usr/bin/chromium"
    driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not (Path(browser).exists() and Path(driver).exists()):
        raise RuntimeError("Debian's chromium and chromium-driver are needed: apt-get install -y chromium chromium-driver")
    return browser, driver


def chrome():
    """A headless Chromium WebDriver that records the browser console (no driver download: Debian's)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = chromium_paths()
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for f in FLAGS:
        opts.add_argument(f)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver), options=opts)
