"""Hardware-in-the-loop, beyond classic data frames: CAN FD, error frames, and the receiving interface
going down and up while the gateway runs (real SocketCAN: vcan0/vcan1, or can0↔can1 on a Pi).

Same rig as test_socketcan.py (can-utils sender, independent ``candump`` witness, the gateway in this
process); the fixtures are in conftest.py. Run: ``pytest hil`` where SocketCAN exists, or ``hil/run-in-vm.sh``.
"""
from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from pathlib import Path

import can
import pytest

import dbc
from dcm.testing import until_async
from hil.chain import Chain
from hil.rig import T0, write_log

pytestmark = pytest.mark.socketcan

REF = dbc.REFERENCE_DBC


FD_DBC = '''VERSION ""
NS_ :
BS_:
BU_: ECU
BO_ 1024 FdBlock: 64 ECU
 SG_ First : 0|16@1+ (1,0) [0|65535] "" ECU
 SG_ Middle : 256|32@1- (0.001,0) [-2000000|2000000] "" ECU
 SG_ Last : 496|16@1+ (0.5,0) [0|32000] "" ECU
BO_ 2566914560 FdExt: 24 ECU
 SG_ Wide : 128|32@1+ (1,0) [0|4294967295] "" ECU
BO_ 256 Classic: 8 ECU
 SG_ Plain : 0|8@1+ (1,0) [0|255] "" ECU
BA_DEF_ BO_ "VFrameFormat" ENUM "StandardCAN","ExtendedCAN","reserved","J1939PG","reserved","reserved","reserved","reserved","reserved","reserved","reserved","reserved","reserved","reserved","StandardCAN_FD","ExtendedCAN_FD";
BA_DEF_DEF_ "VFrameFormat" "StandardCAN";
BA_ "VFrameFormat" BO_ 1024 14;
BA_ "VFrameFormat" BO_ 2566914560 15;
'''


def _fd_frames(path: Path) -> list[can.Message]:
    db = dbc.load(path)
    block, ext, classic = (db.get_message_by_name(n) for n in ("FdBlock", "FdExt", "Classic"))
    assert block.is_fd and ext.is_fd and not classic.is_fd
    out = []
    for i in range(50):
        ts = float(T0) + i * 0.05
        out += [
            can.Message(timestamp=ts, arbitration_id=block.frame_id, is_extended_id=False, is_fd=True, bitrate_switch=True,
                        data=block.encode({"First": i, "Middle": -1.5 * i, "Last": 10 + i / 2})),
            can.Message(timestamp=ts + 0.01, arbitration_id=ext.frame_id, is_extended_id=True, is_fd=True,
                        data=ext.encode({"Wide": 4_000_000_000 + i})),
            can.Message(timestamp=ts + 0.02, arbitration_id=classic.frame_id, is_extended_id=False,
                        data=classic.encode({"Plain": i})),
        ]
    return out


def _run_fd(tmp_path, ifaces, broker, path, gateway_kw):
    frames = _fd_frames(path)
    write_log(tmp_path / "fd.log", frames)

    async def main():
        chain = Chain(tmp_path / "w", broker, ifaces.fd_rx, path, gateway_kw)
        played = await chain.play(tmp_path / "fd.log", ifaces.fd_rx, ifaces.fd_tx, tmp_path / "witness.log")
        return chain, played.carried

    chain, carried = asyncio.run(main())
    assert len(carried) == len(frames)
    assert sum(m.is_fd for m in carried) == 100 and max(len(m.data) for m in carried) == 64
    return chain, carried


def test_can_fd_frames_with_fd_enabled(tmp_path, fd_ifaces, broker):
    """A DBC with a 64-byte CAN FD message (and a 24-byte extended one): with ``fd = true`` the gateway
    opens its socket with CAN_RAW_FD_FRAMES and stores every FD signal right, beside classic frames."""
    path = tmp_path / "fd.dbc"
    path.write_text(FD_DBC)
    chain, carried = _run_fd(tmp_path, fd_ifaces, broker, path, {"fd": True})
    assert chain.gw.source.stats.frames == 150
    assert sum(m.is_fd for m in chain.seen) == 100
    assert chain.gw.sampler.stats.frames_malformed == 0
    stored = chain.stored()
    assert stored and chain.mismatches(carried) == 0
    # the last second holding FD values (the classic frames may spill into one more second)
    last = stored[max(t for t, row in stored.items() if "Last" in row)]
    assert last["Last"] == 10 + 49 / 2 and last["Wide"] == 4_000_000_049


def test_can_fd_dbc_needs_no_fd_switch(tmp_path, fd_ifaces, broker):
    """A DBC with FD messages and the default ``fd = false``: the gateway opens an FD socket by itself
    (found here: a classic socket never sees FD frames, so they went uncollected without a word)."""
    path = tmp_path / "fd.dbc"
    path.write_text(FD_DBC)
    chain, carried = _run_fd(tmp_path, fd_ifaces, broker, path, {})
    assert chain.gw.needs_fd
    assert chain.gw.source.stats.frames == 150
    stored = chain.stored()
    fd_seconds = [t for t, row in stored.items() if "First" in row]  # classic frames may spill over
    assert fd_seconds and stored[max(fd_seconds)]["First"] == 49 and chain.mismatches(carried) == 0


def test_error_frames_are_counted_not_decoded(tmp_path, ifaces, broker):
    """Error frames (CAN_ERR_FLAG) injected on the interface reach the gateway's socket (python-can
    sets CAN_RAW_ERR_FILTER) and are counted, never sampled; data frames around them are unaffected."""
    if not ifaces.rx.startswith("vcan"):
        pytest.skip("error frames can be injected on vcan only; on hardware, short CAN_H to CAN_L briefly")
    frames = []
    for i in range(40):
        ts = float(T0) + i * 0.05
        frames.append(can.Message(timestamp=ts, arbitration_id=0x1C0, is_extended_id=False, data=bytes([i]) * 8))
        if i % 4 == 0:  # CAN_ERR_PROT | CAN_ERR_BUSERROR..., controller problem in data[1]
            frames.append(can.Message(timestamp=ts + 0.01, arbitration_id=0x088, is_error_frame=True,
                                      data=bytes([0, 0x04, 0x80, 0, 0, 0, 0, 0])))
    write_log(tmp_path / "err.log", frames)

    async def main():
        chain = Chain(tmp_path / "w", broker, ifaces.rx, REF)
        played = await chain.play(tmp_path / "err.log", ifaces.rx, ifaces.tx, tmp_path / "witness.log",
                                  expect=lambda carried: 40)
        await until_async(lambda: chain.gw.source.stats.error_frames >= 10, 5)
        return chain, played.carried

    chain, carried = asyncio.run(main())
    assert not any(m.is_error_frame for m in carried)  # candump -L does not show them (no -e with -L)
    stats = chain.gw.source.stats
    assert (stats.error_frames, stats.frames) == (10, 40)
    assert chain.gw.sampler.stats.frames_seen == 40
    assert chain.gw.sampler.stats.frames_malformed == 0
    assert not any(m.is_error_frame for m in chain.seen)
    assert chain.mismatches(carried) == 0


def _ip(*args: str) -> None:
    subprocess.run(["ip", "link", "set", *args], check=True, timeout=30)


def test_interface_down_and_up_while_running(tmp_path, netadmin, broker):
    """``ip link set <rx> down`` for ~2 s while frames flow: the gateway's socket fails (ENETDOWN), it
    reopens with backoff, reports one outage with its length, and data resumes after ``up``."""
    ifaces = netadmin
    stop = threading.Event()
    sent_after_up: list[float] = []
    up_at: list[float] = []

    def sender():
        bus = can.Bus(interface="socketcan", channel=ifaces.tx)
        i = 0
        try:
            while not stop.is_set():
                i += 1
                try:
                    bus.send(can.Message(arbitration_id=0x1C0, is_extended_id=False, data=bytes([i % 256]) * 8))
                    if up_at:
                        sent_after_up.append(time.time())
                except can.CanError:
                    pass  # down: nothing to send on
                stop.wait(0.02)
        finally:
            bus.shutdown()

    async def main():
        chain = Chain(tmp_path / "w", broker, ifaces.rx, REF)
        await chain.start()
        th = threading.Thread(target=sender, daemon=True)
        th.start()
        try:
            await until_async(lambda: chain.gw.source.stats.frames > 50, 30)
            down = time.time()
            await asyncio.to_thread(_ip, ifaces.rx, "down")
            await asyncio.sleep(2.0)
            await asyncio.to_thread(_ip, ifaces.rx, "up")
            up_at.append(time.time())
            frames_at_up = chain.gw.source.stats.frames
            await until_async(lambda: chain.gw.source.stats.frames > frames_at_up + 100, 30)
        finally:
            stop.set()
            await asyncio.to_thread(th.join, 10)
            await asyncio.to_thread(_ip, ifaces.rx, "up")  # leave it up whatever happened
        await chain.stop()
        return chain, down, up_at[0]

    chain, down, up = asyncio.run(main())
    stats = chain.gw.source.stats
    print(f"\noutage: {stats}")
    assert stats.outages >= 1 and stats.bus_errors >= 1
    began, gap = stats.last_outage
    assert down - 1 < began < up and gap >= up - down - 0.5
    after = [m for m in chain.seen if m.timestamp > up]
    assert len(after) >= 100
    stored = chain.stored()
    assert any(sec > up for sec in stored) and any(sec < down for sec in stored)
    assert not any(down + 0.5 < sec < up - 1.5 for sec in stored)  # the gap is a gap
