"""Hardware-in-the-loop: the gateway on real SocketCAN (vcan0/vcan1, or can0↔can1 on a Pi).

Frames are sent by can-utils in processes of their own and witnessed by an
independent ``candump`` on the receiving interface (kernel timestamps, its own
socket-drop monitor); the gateway runs here and must agree with the witness.
Run: ``pytest hil`` where SocketCAN exists, or ``hil/run-in-vm.sh``.
"""
from __future__ import annotations

import asyncio
import math
import subprocess
import threading
import time
from pathlib import Path

import can
import pytest

import dbc
from gateway.decoder import frame_key
from dcm.testing import until_async
from hil.chain import Chain
from hil.rig import write_log
from minute_packet import Collection
from simulator.can_vehicle import CanVehicle

pytestmark = pytest.mark.socketcan

T0 = 978_307_200  # 2001-01-01: simulator time, far from any kernel timestamp
REF = dbc.REFERENCE_DBC


def _reference_log(path: Path, seconds: float, *, seed: int, time_scale: float = 1.0) -> int:
    db = dbc.load(REF)
    return write_log(path, CanVehicle(db, seed=seed, start_time=float(T0)).frames(seconds), time_scale=time_scale)


def test_reference_car_end_to_end_over_socketcan(tmp_path, ifaces, broker):
    """simulator → canplayer → SocketCAN → gateway (own bus, kernel filters) → Mosquitto → sink →
    Parquet, every cell equal to a direct cantools decode of the frames the interface carried.
"""
    sent = _reference_log(tmp_path / "ref.log", 6, seed=11)

    async def main() -> tuple[Chain, list[can.Message]]:
        chain = Chain(tmp_path / "w", broker, ifaces.rx, REF)
        played = await chain.play(tmp_path / "ref.log", ifaces.rx, ifaces.tx, tmp_path / "witness.log",
                                  expect=lambda carried: len(chain.collected(carried)))
        assert not played.drops, played.drops
        return chain, played.carried

    chain, frames = asyncio.run(main())
    assert len(frames) == sent  # the interface carried every frame
    gw = chain.gw
    assert gw.source.stats.frames == sent
    assert gw.sampler.stats.frames_malformed == gw.sampler.stats.frames_late == 0
    stored = chain.stored()
    seconds = {math.floor(m.timestamp) for m in frames}
    assert set(stored) == seconds
    assert chain.mismatches(frames) == 0
    assert chain.sink.stats.packets_stored == gw.publisher.stats.published > 0


def test_kernel_filters_keep_other_ids_out_of_python(tmp_path, ifaces, broker):
    """Only the collected IDs reach Python: other DBC messages, IDs in no DBC, and an extended ID whose
    low 11 bits equal a collected standard ID (and the reverse) are dropped by the kernel."""
    db = dbc.load(REF)
    frames = list(CanVehicle(db, seed=5, start_time=float(T0)).frames(2))
    wanted = {"VEHICLE_SPEED", "GNSS_POSITION"}  # 0xB4 standard, 0x18F00100 extended
    signals = frozenset(f"{m.name}.{s.name}" for m in db.messages if m.name in wanted for s in m.signals)
    foreign = []
    for i, f in enumerate(frames[::20]):
        t = f.timestamp + 1e-6
        foreign += [
            can.Message(timestamp=t, arbitration_id=0x7FD, is_extended_id=False, data=b"\x01" * 8),  # in no DBC
            can.Message(timestamp=t, arbitration_id=0xB4, is_extended_id=True, data=b"\x02" * 8),
            can.Message(timestamp=t, arbitration_id=0x100, is_extended_id=False, data=b"\x03" * 8),  # = low bits of 0x18F00100
            can.Message(timestamp=t, arbitration_id=0x1ABCDE00 + i % 256, is_extended_id=True, data=b"\x04"),
        ]
    mixed = sorted(frames + foreign, key=lambda m: m.timestamp)
    write_log(tmp_path / "mixed.log", mixed)

    async def main():
        chain = Chain(tmp_path / "w", broker, ifaces.rx, REF, {"collection": Collection(signals=signals)})
        played = await chain.play(tmp_path / "mixed.log", ifaces.rx, ifaces.tx, tmp_path / "witness.log",
                                  expect=lambda carried: len(chain.collected(carried)))
        return chain, played.carried

    chain, carried = asyncio.run(main())
    assert len(carried) == len(mixed)
    keys = chain.collected_keys
    assert keys == {frame_key(0xB4, False), frame_key(0x18F00100, True)}
    want = chain.collected(carried)
    assert 0 < len(want) < len(carried) / 10
    got_keys = {frame_key(m.arbitration_id, m.is_extended_id) for m in chain.seen}
    assert got_keys <= keys, f"frames outside the configuration reached Python: {got_keys - keys}"
    assert len(chain.seen) == chain.gw.source.stats.frames == len(want)
    assert chain.gw.sampler.stats.frames_ignored == 0
    assert chain.mismatches(carried) == 0


def test_kernel_timestamps_are_the_sample_times(tmp_path, ifaces, broker):
    """The sampler gets each frame's kernel receive timestamp (identical, to the microsecond, to what an
    independent candump socket saw), not the sender's time and not the time Python got round to it."""
    db = dbc.load(REF)
    msgs = [m for m in CanVehicle(db, seed=3, start_time=float(T0)).frames(3.5) if m.arbitration_id == 0x1C0]  # ENGINE_STATUS, 100 ms
    write_log(tmp_path / "speed.log", msgs)

    async def main():
        chain = Chain(tmp_path / "w", broker, ifaces.rx, REF)
        played = await chain.play(tmp_path / "speed.log", ifaces.rx, ifaces.tx, tmp_path / "witness.log")
        return chain, played.carried, played.began, played.ended

    chain, carried, began, ended = asyncio.run(main())
    assert len(carried) == len(msgs) == len(chain.sample_times) == 35
    for kernel, sampled in zip((m.timestamp for m in carried), chain.sample_times):
        assert abs(kernel - sampled) < 2e-6  # candump prints microseconds
    assert began - 1 < chain.sample_times[0] and chain.sample_times[-1] < ended + 1
    # the sender's 100 ms cycle survives in kernel time (not bunched up by a late reader)
    gaps = [b - a for a, b in zip(chain.sample_times, chain.sample_times[1:])]
    assert sorted(gaps)[len(gaps) // 2] == pytest.approx(0.1, abs=0.03)
    stored = chain.stored()
    assert set(stored) == {math.floor(t) for t in chain.sample_times}
    assert chain.mismatches(carried) == 0


def test_saturated_bus_loses_no_frame(tmp_path, ifaces, broker):
    """The reference car's traffic played at twice its rate (~4,000 frames/s, a saturated 500 kbit/s
    bus) for a while: the gateway reads every frame the interface carried, and every sample is right
    (with the enlarged receive buffer: in the emulated VM the reader falls up to ~1 s behind)."""
    seconds = 16  # simulated, played in ~8 s
    sent = _reference_log(tmp_path / "flood.log", seconds, seed=21, time_scale=0.5)

    async def main():
        chain = Chain(tmp_path / "w", broker, ifaces.rx, REF)
        played = await chain.play(tmp_path / "flood.log", ifaces.rx, ifaces.tx, tmp_path / "witness.log")
        assert not played.drops, played.drops
        return chain, played.carried

    chain, carried = asyncio.run(main())
    assert len(carried) == sent
    span = carried[-1].timestamp - carried[0].timestamp
    rate = sent / span
    print(f"\nflood: {sent} frames in {span:.1f} s = {rate:,.0f} frames/s; gateway read {chain.gw.source.stats.frames}")
    assert rate > 3500, f"the sender only reached {rate:.0f} frames/s"
    assert chain.gw.source.stats.frames == sent
    assert chain.mismatches(carried) == 0


def test_a_reader_stall_loses_no_frame(tmp_path, ifaces, broker):
    """The gateway as shipped (its own bus, its own socket options) at ~4,000 frames/s while its reader
    thread stalls once for 0.5 s (a GC pause, a starved CPU): its 16 MiB socket buffer holds the
    frames meanwhile (found here: the kernel default of ~200 KB lost half of them)."""
    sent = _reference_log(tmp_path / "flood.log", 8, seed=22, time_scale=0.5)

    async def main():
        chain = Chain(tmp_path / "w", broker, ifaces.rx, REF)
        add = chain.gw.sampler.add
        stalled = []

        def stall_once(timestamp, key, data):
            if len(stalled) == 0 and len(chain.sample_times) > 2000:
                stalled.append(timestamp)
                time.sleep(0.5)
            return add(timestamp, key, data)

        chain.gw.sampler.add = stall_once
        played = await chain.play(tmp_path / "flood.log", ifaces.rx, ifaces.tx, tmp_path / "witness.log")
        return chain, played.carried

    chain, carried = asyncio.run(main())
    assert len(carried) == sent
    print(f"\nstall: gateway read {chain.gw.source.stats.frames} of {sent}")
    assert chain.gw.source.stats.frames == sent


EXT_DBC = '''VERSION ""
NS_ :
BS_:
BU_: ECU
BO_ 256 Std100: 8 ECU
 SG_ StdValue : 0|16@1+ (1,0) [0|65535] "" ECU
BO_ 2565865728 J1939Ext: 8 ECU
 SG_ ExtValue : 0|16@1+ (1,0) [0|65535] "" ECU
 SG_ ExtTemp : 16|8@1- (1,-40) [-168|87] "degC" ECU
BO_ 2147483904 Ext100: 8 ECU
 SG_ Ext100Value : 0|16@1+ (1,0) [0|65535] "" ECU
'''


def test_extended_ids(tmp_path, ifaces, broker):
    """29-bit IDs end to end, including the extended ID 0x100 beside the standard ID 0x100 (one
    kernel filter each, one column set each) and a J1939-style 0x18F00100 whose low 11 bits are 0x100."""
    path = tmp_path / "ext.dbc"
    path.write_text(EXT_DBC)
    t = float(T0)
    frames = []
    for i in range(60):
        ts = t + i * 0.05
        frames += [
            can.Message(timestamp=ts, arbitration_id=0x100, is_extended_id=False, data=(1000 + i).to_bytes(2, "little") + bytes(6)),
            can.Message(timestamp=ts + 0.01, arbitration_id=0x18F00100, is_extended_id=True,
                        data=(2000 + i).to_bytes(2, "little") + bytes([i]) + bytes(5)),
            can.Message(timestamp=ts + 0.02, arbitration_id=0x100, is_extended_id=True, data=(3000 + i).to_bytes(2, "little") + bytes(6)),
        ]
    write_log(tmp_path / "ext.log", frames)

    async def main():
        chain = Chain(tmp_path / "w", broker, ifaces.rx, path)
        played = await chain.play(tmp_path / "ext.log", ifaces.rx, ifaces.tx, tmp_path / "witness.log")
        return chain, played.carried

    chain, carried = asyncio.run(main())
    assert len(carried) == len(frames) == chain.gw.source.stats.frames
    assert sum(m.is_extended_id for m in chain.seen) == 120
    stored = chain.stored()
    assert stored and chain.mismatches(carried) == 0
    last = stored[max(stored)]
    assert (last["StdValue"], last["ExtValue"], last["Ext100Value"]) == (1059, 2059, 3059)


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
    last = stored[max(stored)]
    assert last["Last"] == 10 + 49 / 2 and last["Wide"] == 4_000_000_049


def test_can_fd_dbc_needs_no_fd_switch(tmp_path, fd_ifaces, broker):
    path = tmp_path / "fd.dbc"
    path.write_text(FD_DBC)
    """A DBC with FD messages and the default ``fd = false``: the gateway opens an FD socket by itself
    (found here: a classic socket never sees FD frames, so they went uncollected without a word)."""
    chain, carried = _run_fd(tmp_path, fd_ifaces, broker, path, {})
    assert chain.gw.needs_fd
    assert chain.gw.source.stats.frames == 150
    stored = chain.stored()
    assert stored and "First" in stored[max(stored)] and chain.mismatches(carried) == 0


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
