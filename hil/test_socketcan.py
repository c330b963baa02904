"""Hardware-in-the-loop: the gateway on real SocketCAN (vcan0/vcan1, or can0↔can1 on a Pi).

Frames are sent by can-utils in processes of their own and witnessed by an
independent ``candump`` on the receiving interface (kernel timestamps, its own
socket-drop monitor); the gateway runs here and must agree with the witness.
CAN FD, error frames and the interface going down and up are in test_socketcan_fd_and_faults.py.
Run: ``pytest hil`` where SocketCAN exists, or ``hil/run-in-vm.sh``.
"""
from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path

import can
import pytest

import dbc
from gateway.decoder import frame_key
from hil.chain import Chain
from hil.rig import T0, write_log
from minute_packet import Collection
from simulator.can_vehicle import CanVehicle

pytestmark = pytest.mark.socketcan

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
    assert chain.sink.stats.packets_written == gw.publisher.stats.published > 0


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
