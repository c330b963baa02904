"""Session fixtures: one real Mosquitto on a free loopback port for the whole test session, and the
reference car's schema."""
from __future__ import annotations

import pytest

import dbc
from dcm.broker import BrokerUrl, private_mosquitto
from minute_packet import Schema, schema_from_dbc


@pytest.fixture(scope="session")
def broker() -> BrokerUrl:
    with private_mosquitto() as url:
        yield url


@pytest.fixture(scope="session")
def schema() -> Schema:
    return schema_from_dbc(dbc.load(dbc.REFERENCE_DBC))
