"""``dcm bench gateway``: CPU per received frame and peak RSS of the gateway pipeline.

Each measurement runs in a fresh child process: a sender thread plays the
reference car's frames in real time onto a python-can ``virtual`` bus (at
~2,000 frames/s, and time-compressed to ~9,000 frames/s, two saturated
500 kbit/s buses), and a receiver does one of three things:

* ``receive``  — only ``bus.recv()`` (the floor every pipeline pays);
* ``baseline`` — receive and ``cantools`` decode every frame;
* ``gateway``  — the real :class:`gateway.service.Gateway` (clock guard, sampler,
  packets, SQLite outbox, MQTT publish to a private Mosquitto).

CPU is the child's process CPU minus the sender thread's own CPU, divided by
frames received; it includes what threads cost (wake-ups, GIL hand-overs).
``inline`` isolates the gateway's own per-frame work: one thread pulls the
same frames from an in-memory bus through the gateway's frame source, clock
guard and sampler, against a bare ``recv`` loop over the same bus.
Run it on your Pi: ``dcm bench gateway --json``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

RATES = {"2k": 1.0, "9k": 4.5}  # time compression of the ~2,000 frames/s reference car


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seconds", type=float, default=8.0, help="wall seconds per measurement")
    p.add_argument("--seed", type=int, default=5)


def run(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"seconds_per_run": args.seconds}
    for label, factor in RATES.items():
        runs = {mode: _child(mode, factor, args.seconds, args.seed) for mode in ("receive", "baseline", "gateway")}
        gw = runs["gateway"]
        out[label] = {
            "frames_per_s": gw["frames_per_s"],
            "us_per_frame": gw["us_per_frame"],
            "us_per_frame_beyond_receive": round(gw["us_per_frame"] - runs["receive"]["us_per_frame"], 2),
            "baseline_us_per_frame": runs["baseline"]["us_per_frame"],
            "receive_us_per_frame": runs["receive"]["us_per_frame"],
            "frames_lost": gw["frames_lost"],
            "peak_rss_mb": gw["peak_rss_mb"],
            "baseline_peak_rss_mb": runs["baseline"]["peak_rss_mb"],
            "packets": gw.get("packets", 0),
        }
    out["inline"] = _inline(args.seed)
    # the headline keys, at the 9k rate (the harder one)
    for key in ("us_per_frame", "baseline_us_per_frame", "frames_lost", "peak_rss_mb"):
        out[key] = out["9k"][key]
    return out


def _inline(seed: int, repeats: int = 3) -> dict[str, float]:
    """Per-frame CPU of the gateway's reader path in one thread, beside bare receive (best of N)."""
    import tempfile
    import time

    import can

    import dbc as dbc_files
    from dcm.broker import BrokerUrl
    from gateway.can_source import CanSource
    from gateway.config import GatewayConfig
    from gateway.service import Gateway
    from simulator.can_vehicle import CanVehicle

    db = dbc_files.load(dbc_files.REFERENCE_DBC)
    frames = list(CanVehicle(db, seed=seed, start_time=1_767_225_600.0).frames(60))

    class ListBus(can.BusABC):
        def __init__(self) -> None:
            super().__init__(channel="inline")
            self._it = iter(frames)

        def _recv_internal(self, timeout):
            return next(self._it, None), True

        def send(self, msg, timeout=None) -> None:
            raise NotImplementedError

    def bare() -> float:
        bus = ListBus()
        recv = bus.recv
        t = time.process_time()
        while recv(0) is not None:
            pass
        spent = time.process_time() - t
        bus.shutdown()
        return spent

    def gateway(tmp: str) -> float:
        bus = ListBus()
        gw = Gateway(GatewayConfig(vehicle_id="INLINE", broker=BrokerUrl("127.0.0.1", 1),
                                   outbox_path=f"{tmp}/o.sqlite"), bus=bus)
        gw._emit = lambda packets: None  # packets are the writer thread's business
        source, handle = CanSource(bus), gw._handle
        t = time.process_time()
        while (msg := source.recv(0)) is not None:
            handle(msg)
        spent = time.process_time() - t
        bus.shutdown()
        gw.outbox.close()
        return spent

    with tempfile.TemporaryDirectory() as tmp:
        receive = min(bare() for _ in range(repeats))
        pipeline = min(gateway(tmp) for _ in range(repeats))
    n = len(frames)
    return {"frames": n, "receive_us_per_frame": round(receive / n * 1e6, 3),
            "us_per_frame": round(pipeline / n * 1e6, 3),
            "us_per_frame_beyond_receive": round((pipeline - receive) / n * 1e6, 3)}


def _child(mode: str, factor: float, seconds: float, seed: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.gateway_bench", mode, str(factor), str(seconds), str(seed)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds * 10 + 120)
    if done.returncode != 0:
        raise RuntimeError(f"bench child {mode} failed: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _child_main(mode: str, factor: float, seconds: float, seed: int) -> dict[str, Any]:
    import resource
    import tempfile
    import threading
    import time
    import uuid

    import can

    import dbc as dbc_files
    from simulator.can_vehicle import CanVehicle

    db = dbc_files.load(dbc_files.REFERENCE_DBC)
    channel = uuid.uuid4().hex
    rx = can.Bus(interface="virtual", channel=channel, preserve_timestamps=True)
    start = 1_767_225_600.0
    vehicle = CanVehicle(db, seed=seed, start_time=start)
    sender_cpu = [0.0]
    sent = [0]
    finished = threading.Event()

    def sender() -> None:
        t_cpu = time.thread_time()
        with can.Bus(interface="virtual", channel=channel, preserve_timestamps=True) as tx:
            t0 = time.monotonic()
            for msg in vehicle.frames(seconds * factor + 5):
                msg.timestamp = start + (msg.timestamp - start) / factor
                due = t0 + (msg.timestamp - start)
                if due - t0 > seconds:
                    break
                delay = due - time.monotonic()
                if delay > 0.001:
                    time.sleep(delay)
                tx.send(msg)
                sent[0] += 1
        sender_cpu[0] = time.thread_time() - t_cpu
        finished.set()

    result: dict[str, Any] = {"mode": mode}
    cpu0 = time.process_time()
    wall0 = time.monotonic()
    thread = threading.Thread(target=sender, name="sender")
    if mode == "gateway":
        import asyncio

        from dcm.broker import private_mosquitto
        from gateway.config import GatewayConfig
        from gateway.service import Gateway

        with tempfile.TemporaryDirectory() as tmp, private_mosquitto() as broker:
            gw = Gateway(GatewayConfig(vehicle_id="BENCH", broker=broker, outbox_path=f"{tmp}/o.sqlite",
                                       interface="virtual", channel=channel), bus=rx)
            cpu0 = time.process_time()

            async def main() -> None:
                task = asyncio.create_task(gw.run())
                thread.start()
                while not finished.is_set():
                    await asyncio.sleep(0.1)
                await asyncio.sleep(0.5)
                gw.stop()
                await task

            asyncio.run(main())
            received = gw.source.stats.frames
            result["packets"] = gw.stats.packets_made
    else:
        received = 0
        decode = db.decode_message
        thread.start()
        while True:
            msg = rx.recv(timeout=0.5)
            if msg is None:
                if finished.is_set():
                    break
                continue
            received += 1
            if mode == "baseline":
                try:
                    decode(msg.arbitration_id, msg.data)
                except Exception:
                    pass
    cpu = time.process_time() - cpu0 - sender_cpu[0]
    rx.shutdown()
    result.update(
        frames_sent=sent[0],
        frames_received=received,
        frames_lost=sent[0] - received,
        frames_per_s=round(sent[0] / seconds),
        us_per_frame=round(cpu / max(received, 1) * 1e6, 2),
        wall_s=round(time.monotonic() - wall0, 1),
        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    )
    return result


if __name__ == "__main__":
    mode_, factor_, seconds_, seed_ = sys.argv[1:5]
    print(json.dumps(_child_main(mode_, float(factor_), float(seconds_), int(seed_))))
