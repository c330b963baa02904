"""Headless Chromium for the dashboard's tests (bench.browser), screenshots in the test artefacts folder."""
from __future__ import annotations

import os
from pathlib import Path

from bench.browser import FLAGS, chrome, chromium_paths  # noqa: F401

ARTIFACTS = Path(os.environ.get("DCM_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))


def screenshot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def console_errors(driver) -> list[dict]:
    return [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
