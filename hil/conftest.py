"""HIL fixtures: the interfaces under test (skipped with the reason when there is no SocketCAN),
can-utils, and one private Mosquitto for the session."""
from __future__ import annotations

import os

import pytest

from dcm.broker import BrokerStartError, BrokerUrl, private_mosquitto
from hil.rig import Interfaces, missing_tools, mtu, socketcan_problem

TOOLS = ("candump", "canplayer", "cangen")


def pytest_collection_modifyitems(items):
    for item in items:
        if "/hil/" in str(item.fspath):
            item.add_marker(pytest.mark.socketcan)


@pytest.fixture(scope="session")
def ifaces() -> Interfaces:
    ifs = Interfaces.from_env()
    for name in dict.fromkeys((ifs.tx, ifs.rx)):
        problem = socketcan_problem(name)
        if problem:
            pytest.skip(f"{problem} (set DCM_HIL_TX/DCM_HIL_RX, create vcan0, or run hil/run-in-vm.sh)")
    missing = missing_tools(*TOOLS)
    if missing:
        pytest.skip(f"can-utils missing ({', '.join(missing)}): apt-get install can-utils")
    return ifs


@pytest.fixture(scope="session")
def fd_ifaces(ifaces: Interfaces) -> Interfaces:
    for name in dict.fromkeys((ifaces.fd_tx, ifaces.fd_rx)):
        problem = socketcan_problem(name)
        if problem:
            pytest.skip(f"{problem} (CAN FD: set DCM_HIL_FD_TX/DCM_HIL_FD_RX or create vcan1)")
        if mtu(name) != 72:
            pytest.skip(f"{name} is not CAN FD capable (mtu {mtu(name)}): "
                        f"`ip link set {name} mtu 72` (vcan) or `... type can ... fd on` (hardware)")
    return ifaces


@pytest.fixture
def netadmin(ifaces: Interfaces) -> Interfaces:
    if os.geteuid() != 0:
        pytest.skip("taking an interface down and up needs root (CAP_NET_ADMIN)")
    return ifaces


@pytest.fixture(scope="session")
def broker(ifaces) -> BrokerUrl:
    try:
        with private_mosquitto() as url:
            yield url
    except BrokerStartError as exc:
        pytest.skip(str(exc))
