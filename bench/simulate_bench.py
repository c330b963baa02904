"""``dcm bench simulate``: fleet generation per core and MQTT publish rate, each beside a baseline.

* ``vehicles_per_core_realtime``: vehicle-minutes one core generates and
  encodes per minute of CPU time (packet mode, vectorised), i.e. how many
  vehicles at one packet per minute it keeps up with; baseline: the CAN-level
  path (CanVehicle frames through the gateway's Sampler) for one vehicle.
* ``packets_per_s_published``: packets acknowledged (QoS 1) by a private
  Mosquitto from this one process through :class:`MqttMux`; baseline: one
  paho client publishing one packet at a time and waiting for its PUBACK.
* with ``--chain``: the whole chain, fleet → Mosquitto → a sink in another
  process, accelerated; the sink's stored packets/s times 60 is the largest
  fleet it holds in real time.
"""
from __future__ import annotations

import argparse
import time
from typing import Any

T0 = 1_767_225_600


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vehicles", type=int, default=2048, help="vehicles for the generation measurement")
    p.add_argument("--minutes", type=int, default=2)
    p.add_argument("--publish-packets", type=int, default=20_000)
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--baseline-packets", type=int, default=1000)
    p.add_argument("--chain", action="store_true", help="also run fleet → Mosquitto → sink")
    p.add_argument("--chain-vehicles", type=int, default=20_000)
    p.add_argument("--chain-minutes", type=int, default=3)
    p.add_argument("--chain-workers", type=int, default=1, help="sink processes sharing one subscription")
    p.add_argument("--chain-layout", choices=("vehicle", "bucket"), default="bucket",
                   help="the sink's lake layout (bucket is the one meant for large fleets)")


def _generation(vehicles: int, minutes: int) -> dict[str, Any]:
    from minute_packet import encode
    from simulator.fleet_generator import FleetGenerator
    from simulator.fleet_spec import FleetSpec

    gen = FleetGenerator(FleetSpec(vehicles=vehicles, duration_s=minutes * 60, start_time=T0, seed=1))
    payloads: list[bytes] = []
    cpu = time.process_time()
    for gw in gen:
        payloads += [encode(p) for p in gw.packets]
    cpu = time.process_time() - cpu
    per_vehicle_minute = cpu / len(payloads)
    return {"vehicles_per_core_realtime": int(60 / per_vehicle_minute),
            "generate_encode_us_per_packet": round(per_vehicle_minute * 1e6, 1),
            "packet_bytes_mean": round(sum(map(len, payloads)) / len(payloads), 1), "_payloads": payloads}


def _can_baseline(seconds: int = 30) -> dict[str, Any]:
    import dbc as dbc_files
    from gateway.decoder import frame_key
    from gateway.sampler import Sampler
    from minute_packet import encode, schema_from_dbc
    from simulator.can_vehicle import CanVehicle

    db = dbc_files.load(dbc_files.REFERENCE_DBC)
    schema = schema_from_dbc(db)
    sampler = Sampler(db, schema, vehicle_id="BENCH", model="reference-car", boot_id=bytes(16))
    cpu = time.process_time()
    packets = []
    for m in CanVehicle(db, seed=1, start_time=float(T0)).frames(seconds):
        packets += sampler.add(m.timestamp, frame_key(m.arbitration_id, m.is_extended_id), m.data)
    packets += sampler.flush()
    for p in packets:
        encode(p)
    cpu = (time.process_time() - cpu) * 60 / seconds
    return {"baseline_can_level_vehicles_per_core_realtime": round(60 / cpu, 2)}


def _publish(broker, payloads: list[bytes], n: int, connections: int) -> float:
    from simulator.mqtt_mux import MqttMux

    mux = MqttMux(broker, connections=connections, client_prefix=f"bench-{time.monotonic_ns()}")
    mux.start()
    t = time.perf_counter()
    for i in range(n):
        mux.publish(i % connections, f"bench/V{i % 5000}/telemetry", payloads[i % len(payloads)])
    mux.flush(120)
    elapsed = time.perf_counter() - t
    acked = mux.stats.acked
    mux.close()
    return acked / elapsed


def _publish_baseline(broker, payloads: list[bytes], n: int) -> float:
    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-one-{time.monotonic_ns()}")
    c.connect(broker.host, broker.port)
    c.loop_start()
    t = time.perf_counter()
    for i in range(n):
        c.publish(f"bench/V{i}/telemetry", payloads[i % len(payloads)], qos=1).wait_for_publish(10)
    elapsed = time.perf_counter() - t
    c.disconnect()
    c.loop_stop()
    return n / elapsed


def _metrics(port: int) -> dict[str, int]:
    import urllib.request

    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return {}
    return {line.split()[0]: int(float(line.split()[-1])) for line in text.splitlines()
            if line.startswith(("dcm_sink_packets_staged_total", "dcm_sink_packets_written_total"))}


def _chain(broker, vehicles: int, minutes: int, layout: str, workers: int = 1) -> dict[str, Any]:
    """Fleet → Mosquitto → ``workers`` ``dcm sink`` processes (one shared subscription when more
    than one), as fast as possible; nothing may be lost.

    Two rates: packets durably staged (and acknowledged) per second, and packets written to the
    Parquet lake per second (the sinks roll every 5 s); the real-time fleet size is the lower."""
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from simulator.fleet_runner import FleetRun, FleetRunConfig
    from simulator.fleet_spec import FleetSpec

    import os

    with tempfile.TemporaryDirectory(prefix="dcm-bench-chain-") as tmp:
        key = Path(tmp, "key.bin")  # the sink refuses to start without a masking key
        key.write_bytes(os.urandom(32))
        key.chmod(0o600)
        port = 9100 + time.monotonic_ns() % 800
        ports = [port + i for i in range(workers)]
        share = ["--share-group", "bench"] if workers > 1 else []
        sinks = [subprocess.Popen([sys.executable, "-m", "dcm.cli", "sink", "--broker", str(broker), "--lake",
                                   f"{tmp}/lake", "--state", f"{tmp}/state-{i}.sqlite", "--quarantine", f"{tmp}/q",
                                   "--topic-prefix", "chain", "--client-id", f"bench-sink-{i}", "--roll-interval",
                                   "5", "--layout", layout, "--http", f"127.0.0.1:{p}", "--secret-file", str(key), *share],
                                  stdout=subprocess.DEVNULL, stderr=Path(tmp, f"sink-{i}.log").open("w"))
                 for i, p in enumerate(ports)]
        try:
            time.sleep(3)
            run = FleetRun(FleetRunConfig(FleetSpec(vehicles=vehicles, duration_s=minutes * 60, start_time=T0,
                                                    seed=2), broker=broker, topic_prefix="chain", connections=4))
            t = time.perf_counter()
            summary = run.run()
            published_s = time.perf_counter() - t
            expected = summary["expected"]["packets_expected_stored"]
            stored, in_lake, deadline = 0, 0, time.monotonic() + 900
            total_s = lake_s = None
            while time.monotonic() < deadline and all(s.poll() is None for s in sinks):
                got = [_metrics(p) for p in ports]
                stored = sum(m.get("dcm_sink_packets_staged_total", 0) for m in got)
                in_lake = sum(m.get("dcm_sink_packets_written_total", 0) for m in got)
                if stored >= expected and total_s is None:
                    total_s = time.perf_counter() - t
                if in_lake >= expected:
                    lake_s = time.perf_counter() - t
                    break
                time.sleep(0.5)
            total_s = total_s or time.perf_counter() - t
            dead = [i for i, s in enumerate(sinks) if s.poll() is not None]
            if dead:  # a sink that died (or never started) is a failed run, not a slow one
                log = Path(tmp, f"sink-{dead[0]}.log").read_text()[-2000:]
                raise RuntimeError(f"dcm sink {dead[0]} exited with {sinks[dead[0]].returncode}: {log}")
        finally:
            for sink in sinks:
                sink.terminate()  # a sink writes its staged packets to the lake before exiting
            for sink in sinks:
                try:
                    sink.wait(600)
                except subprocess.TimeoutExpired:
                    sink.kill()
                    sink.wait()
        files = list(Path(tmp, "lake").rglob("*.parquet"))
    lake_rate = in_lake / lake_s if lake_s else None
    return {"chain_vehicles": vehicles, "chain_layout": layout, "chain_workers": workers, "chain_packets": expected,
            "chain_packets_staged": stored, "chain_packets_in_lake": in_lake,
            "chain_publish_s": round(published_s, 1), "chain_staged_s": round(total_s, 1),
            "chain_lake_s": round(lake_s, 1) if lake_s else None, "chain_lake_files": len(files),
            "chain_staged_packets_per_s": round(stored / total_s, 1),
            "chain_lake_packets_per_s": round(lake_rate, 1) if lake_rate else None,
            "chain_vehicles_realtime": int(min(stored / total_s, lake_rate) * 60)
            if lake_rate and in_lake >= expected else None}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from dcm.broker import private_mosquitto

    result = _generation(args.vehicles, args.minutes)
    payloads = result.pop("_payloads")
    result.update(_can_baseline())
    with private_mosquitto() as broker:
        result["packets_per_s_published"] = round(_publish(broker, payloads, args.publish_packets,
                                                           args.connections), 1)
        result["baseline_one_at_a_time_packets_per_s"] = round(
            _publish_baseline(broker, payloads, args.baseline_packets), 1)
        result["publish_connections"] = args.connections
        if args.chain:
            result.update(_chain(broker, args.chain_vehicles, args.chain_minutes, args.chain_layout,
                                 args.chain_workers))
    return result
