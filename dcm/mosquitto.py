"""A Mosquitto process the tests and benches can stop, kill and restart on the same port.

:func:`deploy_config` turns ``deploy/mosquitto/dcm.conf`` (the production file) into one for a
loopback port and a PKI directory, changing only paths, the listener address and persistence,
so the tests exercise the configuration that ships.
"""
from __future__ import annotations

import glob
import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from dcm.broker import find_mosquitto, free_port
from dcm_base.errors import ServiceError

log = logging.getLogger(__name__)

DEPLOY_CONF = Path(__file__).resolve().parent.parent / "deploy" / "mosquitto" / "dcm.conf"


class MosquittoError(ServiceError):
    """Mosquitto exited or did not listen in time."""


def find_dynsec_plugin() -> str:
    """Path of Mosquitto's dynamic-security plugin (Debian: in the mosquitto package)."""
    found = sorted(glob.glob("/usr/lib/*/mosquitto_dynamic_security.so") + glob.glob("/usr/lib/mosquitto_dynamic_security.so")
                   + glob.glob("/usr/local/lib/mosquitto_dynamic_security.so"))
    if not found:
        raise MosquittoError("mosquitto_dynamic_security.so not found (Debian: apt-get install mosquitto)")
    return found[0]


def deploy_config(*, port: int, pki_dir: Path, persistence_dir: Path | None, server: str = "broker",
                  acl_file_only: bool = False, template: Path = DEPLOY_CONF) -> list[str]:
    """The lines of the deploy config for ``127.0.0.1:port`` with everything that config expects
    in ``/etc/mosquitto/dcm/`` taken from ``pki_dir`` (CA, CRL, ``servers/<server>.crt``, and the
    ``acl`` and ``dynamic-security.json`` of ``dcm pki broker-files``) and ``persistence_dir``
    (None: no persistence). ``acl_file_only`` swaps the plugin for the commented ``acl_file`` line."""
    out: list[str] = []
    for raw in template.read_text().splitlines():
        line = raw.strip()
        if acl_file_only and line.startswith("#acl_file"):
            line = line[1:]
        if not line or line.startswith("#"):
            continue
        if acl_file_only and line.startswith("plugin"):
            continue
        key = line.split()[0]
        if key == "listener":
            line = f"listener {port} 127.0.0.1"
        elif key == "plugin":
            line = f"plugin {find_dynsec_plugin()}"
        elif key == "persistence":
            line = f"persistence {'true' if persistence_dir else 'false'}"
        elif key == "persistence_location":
            if not persistence_dir:
                continue
            line = f"persistence_location {persistence_dir}/"
        elif "/etc/mosquitto/dcm/" in line:
            line = line.replace("/etc/mosquitto/dcm/", f"{pki_dir}/").replace("servers/broker.", f"servers/{server}.")
        out.append(line)
    if os.geteuid() == 0:  # as root mosquitto would switch to user 'mosquitto' and lose our files
        out.append("user root")
    return out


class Mosquitto:
    """One broker process with a fixed config and port: ``start``, ``stop`` (SIGTERM: it saves its
    persistence file), ``kill`` (SIGKILL: it does not), ``restart``."""

    def __init__(self, workdir: Path, lines: list[str], port: int | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.conf = self.workdir / "mosquitto.conf"
        self.conf.write_text("\n".join(line.replace("{port}", str(self.port)) for line in lines) + "\n")
        self.logfile = self.workdir / "mosquitto.log"
        self._proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> None:
        with open(self.logfile, "ab") as out:
            self._proc = subprocess.Popen([find_mosquitto(), "-c", str(self.conf)], stdout=out,
                                          stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise MosquittoError(f"mosquitto exited with {self._proc.returncode}: {self.log()[-800:]}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    log.info("mosquitto on 127.0.0.1:%d (pid %d)", self.port, self._proc.pid)
                    return
            time.sleep(0.05)
        self.kill()
        raise MosquittoError(f"mosquitto did not listen on port {self.port} within {timeout} s")

    def log(self) -> str:
        return self.logfile.read_text(errors="replace") if self.logfile.exists() else ""

    def _signal(self, sig: int) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.send_signal(sig)
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    def stop(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def restart(self, *, clean: bool = True) -> None:
        self.stop() if clean else self.kill()
        self.start()

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
