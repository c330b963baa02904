"""Session fixtures: one real Mosquitto on a free loopback port for the whole test session."""
from __future__ import annotations

import pytest

from dcm.broker import BrokerUrl, private_mosquitto


@pytest.fixture(scope="session")
def broker() -> BrokerUrl:
    with private_mosquitto() as url:
        yield url
