"""Kill trials at the gateway's fault points, for the tests and ``dcm bench faults``.

A trial runs a child process (``python -m dcm.faulttrials gateway ...``: the gateway's outbox and
publisher with small packets) with ``DCM_FAULT=<point>:<n>:kill``, so it is SIGKILLed at the n-th
crossing of that boundary; the child prints ``STORED <seq>`` once each ``Outbox.put`` has returned
(the packet is finished). Then the child runs again without a fault and drains its outbox. A
subscriber on the broker must have received every finished packet (re-sends allowed: the sink
dedupes them). ``DCM_FAULT_LOG`` shows whether the kill really happened at that point.
"""
from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

GATEWAY_POINTS = ("outbox.put.before_commit", "outbox.put.committed", "publisher.acked",
                  "outbox.remove.before_commit", "outbox.remove.committed")
ROOT = Path(__file__).resolve().parent.parent


@dataclasses.dataclass
class TrialResult:
    point: str
    n: int
    killed: bool  # the child died at that point (the risky path ran)
    finished: int  # packets Outbox.put returned for
    received: int  # distinct packets the broker delivered
    lost: int  # finished but never delivered
    resent: int  # delivered more than once (the sink drops these)


class _Subscriber:
    def __init__(self, host: str, port: int, topic: str) -> None:
        import paho.mqtt.client as mqtt

        self.seqs: list[int] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        c.on_connect = lambda cl, *a: cl.subscribe(topic, qos=1)
        c.on_subscribe = lambda *a: self._ready.set()
        c.on_message = self._on_message
        c.connect(host, port)
        c.loop_start()
        self._client = c
        if not self._ready.wait(10):
            raise TimeoutError("subscriber could not subscribe")

    def _on_message(self, client, userdata, msg) -> None:
        from minute_packet.codec import validate

        with self._lock:
            self.seqs.append(validate(bytes(msg.payload)).seq)

    def received(self) -> list[int]:
        with self._lock:
            return list(self.seqs)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def _child(args: list[str], env: dict[str, str], timeout: float) -> tuple[int, list[int]]:
    proc = subprocess.run([sys.executable, "-m", "dcm.faulttrials", *args], cwd=ROOT, env=env,
                          capture_output=True, timeout=timeout)
    stored = [int(line.split()[1]) for line in proc.stdout.decode().splitlines() if line.startswith("STORED ")]
    return proc.returncode, stored


def gateway_trial(host: str, port: int, workdir: Path, point: str, n: int, *, packets: int = 6,
                  timeout: float = 60.0) -> TrialResult:
    """One kill trial at ``point`` (its ``n``-th crossing), then a restart that drains."""
    workdir.mkdir(parents=True, exist_ok=True)
    prefix = f"g{uuid.uuid4().hex[:8]}"
    outbox = workdir / f"{prefix}.sqlite"
    flog = workdir / f"{prefix}.faults"
    sub = _Subscriber(host, port, f"{prefix}/+/telemetry")
    try:
        env = dict(os.environ, PYTHONPATH=str(ROOT), DCM_FAULT=f"{point}:{n}:kill", DCM_FAULT_LOG=str(flog))
        rc, stored = _child(["gateway", str(outbox), host, str(port), prefix, "0", str(packets)], env, timeout)
        killed = rc == -9 and flog.exists() and flog.read_text().split() == [point]
        env = {k: v for k, v in env.items() if k not in ("DCM_FAULT", "DCM_FAULT_LOG")}
        rc2, _ = _child(["gateway", str(outbox), host, str(port), prefix, "0", "0"], env, timeout)
        if rc2 != 0:
            raise RuntimeError(f"the restarted gateway exited with {rc2}")
        want = set(stored)
        deadline = time.monotonic() + 10
        while not want <= set(sub.received()) and time.monotonic() < deadline:
            time.sleep(0.05)
        got = sub.received()
    finally:
        sub.close()
    return TrialResult(point, n, killed, len(stored), len(set(got)), len(want - set(got)),
                       len(got) - len(set(got)))


# -- the sink --------------------------------------------------------------------------------------

SINK_POINTS = ("sink.stage.before_commit", "sink.stage.committed", "sink.ack.sent", "sink.assign.committed",
               "sink.write.before_rename", "sink.write.renamed", "sink.finish.before_commit",
               "sink.finish.committed")


@dataclasses.dataclass
class SinkTrialResult:
    point: str
    n: int
    killed: bool
    sent: int
    stored: int  # distinct packets in the lake
    duplicated: int
    lost: int


def _sink_config(host: str, port: int, workdir: Path, prefix: str, secret: bytes):
    import dbc
    from cloud_sink.config import SinkConfig
    from dcm_base.broker_url import BrokerUrl

    return SinkConfig(broker=BrokerUrl(host, port), lake_root=workdir / "lake", state_path=workdir / "state.sqlite",
                      quarantine_dir=workdir / "quarantine", vehicle_secret=secret, topic_prefix=prefix,
                      client_id=f"sink-{prefix}", dbc_paths=(dbc.REFERENCE_DBC,), roll_interval_s=0.1,
                      intake_batch=3, max_batch_packets=4, chunk_packets=2, queue_size=3)


def _sink_child(config, fault: str | None, flog: str, expected: int) -> None:
    """In a forked child: run the sink (with ``fault`` armed) until ``expected`` packets are in the
    lake, then stop cleanly; an armed fault kills it before that."""
    import faultpoints
    from cloud_sink.service import Sink

    if fault:
        os.environ["DCM_FAULT"], os.environ["DCM_FAULT_LOG"] = fault, flog
    else:
        os.environ.pop("DCM_FAULT", None)
    faultpoints.reset()

    async def main() -> None:
        sink = Sink(config)
        task = asyncio.create_task(sink.run())
        deadline = time.monotonic() + 60
        while sink.staging.keys.count("pending = 0") < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        sink.stop()
        await task

    code = 1
    try:
        asyncio.run(main())
        code = 0
    except BaseException:
        import traceback
        traceback.print_exc()
    finally:
        os._exit(code)


def _fork(target, *args, timeout: float) -> int:
    """Run ``target(*args)`` in a forked child; its exit status (negative: killed by that signal)."""
    import multiprocessing

    proc = multiprocessing.get_context("fork").Process(target=target, args=args)
    proc.start()
    proc.join(timeout)
    if proc.is_alive():
        proc.kill()
        proc.join()
        return 0  # the point was never reached: not a kill
    return proc.exitcode


def sink_trial(host: str, port: int, workdir: Path, point: str, n: int, *, packets: int = 10,
               timeout: float = 60.0) -> SinkTrialResult:
    """Queue ``packets`` for a sink's session, run the sink until it is SIGKILLed at the ``n``-th
    crossing of ``point``, run it again, and compare the lake with what was sent."""
    import numpy as np
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    import dbc
    from cloud_sink.lake import mask_vehicle
    from minute_packet import MinutePacket, Topics, encode, schema_from_dbc

    workdir.mkdir(parents=True, exist_ok=True)
    prefix = f"s{uuid.uuid4().hex[:8]}"
    secret = os.urandom(16)
    config = _sink_config(host, port, workdir, prefix, secret)
    topics = Topics(prefix)
    schema = schema_from_dbc(dbc.load(dbc.REFERENCE_DBC))
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=config.client_id, protocol=mqtt.MQTTv5)
    c.connect(host, port, clean_start=False, properties=props)  # the sink's session, before its first start
    c.loop_start()
    c.subscribe([(topics.all_vehicles("telemetry"), 1), (topics.all_schemas, 1)])
    time.sleep(0.2)
    c.disconnect()
    c.loop_stop()
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    pub.connect(host, port)
    pub.loop_start()
    boot, cols = uuid.uuid4().bytes, len(schema.columns)
    for seq in range(packets):
        present = np.ones((cols, ROWS), dtype=bool)
        p = MinutePacket(vehicle_id="VK", model="ref", boot_id=boot, seq=seq, start_time=1_767_225_600 + 60 * seq,
                         fingerprint=schema.fingerprint, values=np.full((cols, ROWS), seq % 7, dtype=np.uint64),
                         present=present)
        pub.publish(topics.telemetry("VK"), encode(p, level=1), qos=1).wait_for_publish(10)
    pub.disconnect()
    pub.loop_stop()
    flog = workdir / f"{prefix}.faults"
    rc = _fork(_sink_child, config, f"{point}:{n}:kill", str(flog), packets, timeout=timeout)
    killed = rc == -9 and flog.exists() and flog.read_text().split() == [point]
    rc2 = _fork(_sink_child, config, None, str(flog), packets, timeout=timeout)
    if rc2 != 0:
        raise RuntimeError(f"the restarted sink exited with {rc2}")
    stored = _lake_copies(workdir / "lake")
    key = mask_vehicle(secret, "VK")
    copies = {seq: c for (v, seq), c in stored.items() if v == key}
    return SinkTrialResult(point, n, killed, packets, sum(1 for s in range(packets) if s in copies),
                           sum(len(c) - 1 for c in copies.values()), sum(1 for s in range(packets) if s not in copies))


def _lake_copies(lake: Path) -> dict[tuple[str, int], list[int]]:
    """(masked vehicle, seq) -> rows of each stored copy (one per file), read with DuckDB."""
    import duckdb

    if not any(lake.rglob("*.parquet")):
        return {}
    out: dict[tuple[str, int], list[int]] = {}
    for vehicle, seq, _file, n in duckdb.connect().execute(
            f"SELECT vehicle, seq, file, count(*) FROM read_parquet('{lake}/**/*.parquet', hive_partitioning = true,"
            f" union_by_name = true, filename = 'file') GROUP BY ALL").fetchall():
        out.setdefault((vehicle, int(seq)), []).append(int(n))
    return out


ROWS = 4


# -- the child ----------------------------------------------------------------------------------

def _gateway_child(outbox_path: str, host: str, port: str, prefix: str, first: str, count: str) -> int:
    import numpy as np

    from dcm.broker import BrokerUrl
    from gateway.outbox import Outbox
    from gateway.publisher import Publisher, PublisherSettings
    from minute_packet import MinutePacket, Topics, encode

    topics = Topics(prefix)
    outbox = Outbox(outbox_path)
    boot = uuid.UUID(int=0).bytes
    settings = PublisherSettings(broker=BrokerUrl(host, int(port)), client_id=f"gw-{prefix}",
                                 schema_topic=topics.schema(b"\0" * 8), schema_payload=b"{}",
                                 status_topic=topics.status("V"), backoff_min_s=0.05, backoff_max_s=0.5,
                                 window=2, backlog_rate=1000.0)

    async def main() -> None:
        pub = Publisher(outbox, settings, status=dict)
        task = asyncio.create_task(pub.run())
        for seq in range(int(first), int(first) + int(count)):
            p = MinutePacket(vehicle_id="V", model="m", boot_id=boot, seq=seq, start_time=1_767_225_600 + 60 * seq,
                             fingerprint=b"\0" * 8, values=np.full((3, 2), seq, dtype=np.uint64),
                             present=np.ones((3, 2), dtype=bool))
            await asyncio.to_thread(outbox.put, topics.telemetry("V"), encode(p, level=1))
            print(f"STORED {seq}", flush=True)
            pub.wake.set()
            await asyncio.sleep(0.01)
        while outbox.depth:
            await asyncio.sleep(0.02)
        task.cancel()

    asyncio.run(main())
    outbox.close()
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "gateway":
        sys.exit(_gateway_child(*sys.argv[2:8]))
    sys.exit(f"unknown trial kind {sys.argv[1]!r}")
