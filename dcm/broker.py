"""A private Mosquitto for the demo, the benches and the tests.

Broker URLs themselves (:class:`BrokerUrl`) live in :mod:`dcm_base.broker_url`
and are re-exported here for the application layer.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from dcm_base.broker_url import BrokerUrl
from dcm_base.errors import ServiceError

log = logging.getLogger(__name__)

__all__ = ["BrokerStartError", "BrokerUrl", "find_mosquitto", "free_port", "private_mosquitto"]


class BrokerStartError(ServiceError):
    """A private Mosquitto could not be started (not installed, exited, never listened)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_mosquitto() -> str:
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if candidate and Path(candidate).exists():
            return candidate
    raise BrokerStartError("mosquitto is not installed (Debian: apt-get install mosquitto)")


@contextlib.contextmanager
def private_mosquitto(port: int | None = None, *, persistence_dir: Path | None = None,
                      extra_listener_lines: list[str] | None = None) -> Iterator[BrokerUrl]:
    """Run a throw-away Mosquitto on a free loopback port for the duration of the block.

    ``persistence_dir`` keeps sessions and queued messages across a restart on the same port;
    ``extra_listener_lines`` go right after the ``listener`` line (TLS settings, say)."""
    binary = find_mosquitto()
    port = port or free_port()
    with tempfile.TemporaryDirectory(prefix="dcm-mosquitto-") as tmp:
        conf = Path(tmp) / "mosquitto.conf"
        lines = [
            f"listener {port} 127.0.0.1",
            *(extra_listener_lines or []),
            "allow_anonymous true",
            "max_queued_messages 100000",
            "max_inflight_messages 100",
            f"persistence {'true' if persistence_dir else 'false'}",
        ]
        if os.geteuid() == 0:  # as root mosquitto would switch to user 'mosquitto' and lose our files
            lines.append("user root")
        if persistence_dir:
            lines.append(f"persistence_location {persistence_dir}/")
        conf.write_text("\n".join(lines) + "\n")
        logfile = open(Path(tmp) / "mosquitto.log", "wb")
        proc = subprocess.Popen([binary, "-c", str(conf)], stdout=logfile, stderr=subprocess.STDOUT)
        try:
            _wait_listening(port, proc, Path(tmp) / "mosquitto.log")
            log.info("private mosquitto on 127.0.0.1:%d (pid %d)", port, proc.pid)
            yield BrokerUrl("127.0.0.1", port)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            logfile.close()


def _wait_listening(port: int, proc: subprocess.Popen, logpath: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BrokerStartError(f"mosquitto exited with {proc.returncode}: {logpath.read_text(errors='replace')[-500:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    proc.kill()
    raise BrokerStartError(f"mosquitto did not listen on port {port} within {timeout} s")
