"""The HIL rig: which SocketCAN interfaces to use, and C tools (can-utils) as sender and witness.

Frames are sent by ``canplayer``/``cangen`` in their own processes, and an
independent ``candump`` (own process, big socket buffer, drop monitor) records
what the receiving interface carried, with the kernel's timestamps. The
gateway under test runs in the pytest process and is compared with that
witness, so nothing here depends on Python keeping up with a busy sender.

Interfaces (environment):
  DCM_HIL_TX / DCM_HIL_RX        classic CAN, default vcan0 / same as TX (vcan echoes
                                 to every socket on it); a Pi with a dual HAT: can0 / can1
  DCM_HIL_FD_TX / DCM_HIL_FD_RX  CAN FD, default vcan1 / same as FD_TX when TX is a vcan,
                                 else TX / RX (the HAT configured with ``fd on``)
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import subprocess
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import can

T0 = 978_307_200  # 2001-01-01: start of the simulated frames' time, far from any kernel timestamp
MARKER_ID = 0x7FE  # outside every DBC used here: the witness is listening once it sees one
CAN_ERR_FLAG = 0x2000_0000
CANDUMP_RCVBUF = 32 << 20


@dataclasses.dataclass(frozen=True)
class Interfaces:
    tx: str
    rx: str
    fd_tx: str
    fd_rx: str

    @classmethod
    def from_env(cls, env: os._Environ | dict = os.environ) -> Interfaces:
        tx = env.get("DCM_HIL_TX") or "vcan0"
        rx = env.get("DCM_HIL_RX") or tx
        vcan = tx.startswith("vcan")
        fd_tx = env.get("DCM_HIL_FD_TX") or ("vcan1" if vcan else tx)
        fd_rx = env.get("DCM_HIL_FD_RX") or (fd_tx if vcan else rx)
        return cls(tx, rx, fd_tx, fd_rx)

    @property
    def same(self) -> bool:
        return self.tx == self.rx


def socketcan_problem(ifname: str) -> str | None:
    """Why a SocketCAN bus cannot be opened on ``ifname`` (None when it can)."""
    try:
        bus = can.Bus(interface="socketcan", channel=ifname)
    except Exception as exc:  # no AF_CAN in the kernel (errno 97), no such device (19)...
        return f"no SocketCAN interface {ifname!r}: {exc}"
    bus.shutdown()
    return None


def operstate(ifname: str) -> str:
    try:
        return Path(f"/sys/class/net/{ifname}/operstate").read_text().strip()
    except OSError:
        return "missing"


def mtu(ifname: str) -> int:
    try:
        return int(Path(f"/sys/class/net/{ifname}/mtu").read_text())
    except (OSError, ValueError):
        return 0


def missing_tools(*names: str) -> list[str]:
    return [n for n in names if shutil.which(n) is None]


# ---------------------------------------------------------------- candump log format

def log_line(msg: can.Message, ifname: str) -> str:
    """One frame in candump's compact log format (``candump -L``, ``canplayer -I``)."""
    if msg.is_error_frame:
        ident = f"{(msg.arbitration_id & 0x1FFFFFFF) | CAN_ERR_FLAG:08X}"
    elif msg.is_extended_id:
        ident = f"{msg.arbitration_id:08X}"
    else:
        ident = f"{msg.arbitration_id:03X}"
    if msg.is_fd:
        flags = (1 if msg.bitrate_switch else 0) | (2 if msg.error_state_indicator else 0)
        body = f"#{flags:X}{bytes(msg.data).hex().upper()}"
    elif msg.is_remote_frame:
        body = "R"
    else:
        body = bytes(msg.data).hex().upper()
    return f"({msg.timestamp:.6f}) {ifname} {ident}#{body}"


def parse_line(line: str) -> can.Message | None:
    """A candump compact log line back to a frame (None for other lines, e.g. DROPCOUNT)."""
    if not line.startswith("("):
        return None
    stamp, ifname, frame = line.split()[:3]
    ident, _, body = frame.partition("#")
    can_id = int(ident, 16)
    fd = body.startswith("#")
    error = len(ident) == 8 and bool(can_id & CAN_ERR_FLAG)
    extended = len(ident) == 8 and not error
    kw: dict = dict(timestamp=float(stamp[1:-1]), channel=ifname, is_extended_id=extended,
                    arbitration_id=can_id & (0x1FFFFFFF if len(ident) == 8 else 0x7FF))
    if fd:
        flags = int(body[1], 16)
        return can.Message(is_fd=True, bitrate_switch=bool(flags & 1), error_state_indicator=bool(flags & 2),
                           data=bytes.fromhex(body[2:]), **kw)
    if body.startswith("R"):
        return can.Message(is_remote_frame=True, **kw)
    return can.Message(is_error_frame=error, data=bytes.fromhex(body), **kw)


def write_log(path: Path, frames: Iterable[can.Message], *, ifname: str = "sim", time_scale: float = 1.0) -> int:
    """Write frames for ``canplayer``; ``time_scale`` < 1 compresses time (0.5 = twice the rate)."""
    n = 0
    t0: float | None = None
    with open(path, "w") as f:
        for msg in frames:
            if t0 is None:
                t0 = msg.timestamp
            msg = msg if time_scale == 1.0 else _retimed(msg, t0 + (msg.timestamp - t0) * time_scale)
            f.write(log_line(msg, ifname) + "\n")
            n += 1
    return n


def _retimed(msg: can.Message, ts: float) -> can.Message:
    return can.Message(timestamp=ts, arbitration_id=msg.arbitration_id, is_extended_id=msg.is_extended_id,
                       is_fd=msg.is_fd, bitrate_switch=msg.bitrate_switch, is_remote_frame=msg.is_remote_frame,
                       is_error_frame=msg.is_error_frame, data=msg.data, dlc=msg.dlc)


def play(path: Path, tx: str, *, timeout: float = 300) -> None:
    """Replay a log onto ``tx`` with its timing (``canplayer``, a process of its own)."""
    subprocess.run(["canplayer", "-I", str(path), f"{tx}=sim"], check=True, timeout=timeout)


# ---------------------------------------------------------------- the witness

class Witness:
    """``candump`` on the receiving interface: every frame it carried, with kernel timestamps."""

    def __init__(self, ifname: str, out: Path) -> None:
        self.ifname = ifname
        self.out = out
        self._proc: subprocess.Popen | None = None
        self._file = None

    def start(self, tx: str, timeout: float = 20.0) -> None:
        self._file = open(self.out, "wb")
        # -L log format (no error frames: candump refuses -e with -L), -d report kernel drops on its
        # own socket, -r a big receive buffer;
        # stdbuf: flushed lines, so readiness is visible
        cmd = ["candump", "-L", "-d", "-r", str(CANDUMP_RCVBUF), self.ifname]
        if shutil.which("stdbuf"):
            cmd = ["stdbuf", "-oL", *cmd]
        self._proc = subprocess.Popen(cmd, stdout=self._file, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        with can.Bus(interface="socketcan", channel=tx) as bus:
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    raise RuntimeError(f"candump exited with {self._proc.returncode}: {self.out.read_text()[-300:]}")
                bus.send(can.Message(arbitration_id=MARKER_ID, is_extended_id=False, data=b"HIL"))
                time.sleep(0.2)
                if f" {MARKER_ID:03X}#" in self.out.read_text(errors="replace"):
                    return
        raise RuntimeError(f"candump on {self.ifname} never saw the marker frame sent on {tx}")

    def stop(self) -> None:
        if self._proc is not None:
            time.sleep(0.3)  # let it write what the kernel still holds
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def lines(self) -> list[str]:
        return self.out.read_text(errors="replace").splitlines()

    def drops(self) -> list[str]:
        return [line for line in self.lines() if "DROPCOUNT" in line]

    def frames(self, *, include_marker: bool = False) -> list[can.Message]:
        out = []
        for line in self.lines():
            msg = parse_line(line)
            if msg is None:
                continue
            if not include_marker and msg.arbitration_id == MARKER_ID and not msg.is_extended_id:
                continue
            out.append(msg)
        return out


@contextlib.contextmanager
def witness(ifname: str, tx: str, out: Path) -> Iterator[Witness]:
    w = Witness(ifname, out)
    try:
        w.start(tx)
        yield w
    finally:
        w.stop()
