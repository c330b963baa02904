"""gateway → fault proxy → Mosquitto → fault proxy → sink, in one process, for fault tests and
``dcm bench faults``.

The gateway side is the gateway's own outbox and publisher (the part that owns the promise),
fed with minute packets of known (vehicle, boot, seq); the sink is the real :class:`Sink`. Both
reach the broker only through a :class:`FaultProxy`, so a test can blackhole, drop, delay or
half-open either hop, and restart the broker with or without persistence. :meth:`Chain.verdict`
compares the lake (read with DuckDB) with what was sent: every packet stored once, or missing
and counted by the sink's sequence-gap detector (what ``dcm sink gaps`` reports).
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
import uuid
from pathlib import Path

import numpy as np

import dbc
from cloud_sink.gaps import union_gaps
from cloud_sink.intake import MqttIntake
from cloud_sink.lake import mask_vehicle
from cloud_sink.service import Sink, SinkConfig
from dcm.broker import BrokerUrl, free_port  # re-exported from dcm_base
from dcm.faultproxy import FaultProxy
from dcm.mosquitto import Mosquitto
from gateway.outbox import Outbox
from gateway.publisher import Publisher, PublisherSettings
from minute_packet import MinutePacket, Topics, encode, schema_from_dbc

log = logging.getLogger(__name__)

T0 = 1_767_225_600
ROWS = 10


def broker_lines(persistence_dir: Path | None, autosave_s: int = 1) -> list[str]:
    lines = ["listener {port} 127.0.0.1", "allow_anonymous true", "max_queued_messages 100000",
             "max_inflight_messages 100", f"persistence {'true' if persistence_dir else 'false'}"]
    if persistence_dir:
        lines += [f"persistence_location {persistence_dir}/", f"autosave_interval {autosave_s}"]
    if os.geteuid() == 0:
        lines.append("user root")
    return lines


@dataclasses.dataclass
class Verdict:
    sent: int
    stored: int  # distinct packets in the lake
    duplicated: int  # extra copies in the lake
    lost: int  # sent, not in the lake
    lost_in_gaps: int  # of the lost, how many the gap detector reports
    gap_packets: int  # everything the gap detector reports
    altered: int  # stored with a row count other than sent

    @property
    def exact(self) -> bool:
        """Every packet once, or every missing one counted as a gap, nothing altered or doubled."""
        return self.duplicated == 0 and self.altered == 0 and self.lost == self.lost_in_gaps


class Chain:
    """One broker, two proxies, a gateway publisher per vehicle and one sink. Use inside a running
    event loop: ``async with Chain(...) as chain:``."""

    def __init__(self, workdir: Path, *, vehicles: tuple[str, ...] = ("F1",), persistence: bool = False,
                 keepalive: int = 2, prefix: str | None = None) -> None:
        self.workdir = Path(workdir)
        self.vehicles = vehicles
        self.keepalive = keepalive
        self.topics = Topics(prefix or f"f{uuid.uuid4().hex[:6]}")
        self.secret = os.urandom(16)
        self.boot = uuid.uuid4().bytes
        self.schema = schema_from_dbc(dbc.load(dbc.REFERENCE_DBC))
        persist = self.workdir / "persist" if persistence else None
        if persist:
            persist.mkdir(parents=True, exist_ok=True)
        self.broker = Mosquitto(self.workdir / "broker", broker_lines(persist), port=free_port())
        self.sent: dict[tuple[str, int], int] = {}
        self._next_seq = {v: 0 for v in vehicles}
        self.outboxes: dict[str, Outbox] = {}
        self.publishers: dict[str, Publisher] = {}
        self._tasks: list[asyncio.Task] = []
        self.sink: Sink | None = None
        self.up: FaultProxy | None = None
        self.down: FaultProxy | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    async def __aenter__(self) -> Chain:
        await asyncio.to_thread(self.broker.start)
        self.up = FaultProxy("127.0.0.1", self.broker.port).start()
        self.down = FaultProxy("127.0.0.1", self.broker.port).start()
        self.start_sink()
        for v in self.vehicles:
            self.outboxes[v] = Outbox(self.workdir / f"outbox-{v}.sqlite")
            settings = PublisherSettings(
                broker=BrokerUrl("127.0.0.1", self.up.port), client_id=f"gw-{v}-{self.topics.prefix}",
                schema_topic=self.topics.schema(self.schema.fingerprint), schema_payload=self.schema.to_json(),
                status_topic=self.topics.status(v), keepalive_s=self.keepalive, backoff_min_s=0.1,
                backoff_max_s=1.0, backlog_rate=1000.0)
            pub = Publisher(self.outboxes[v], settings, status=dict)
            self.publishers[v] = pub
            self._tasks.append(asyncio.create_task(pub.run(), name=f"publisher-{v}"))
        await self.wait(lambda: self.sink.intake.connected.is_set(), 20, "the sink did not connect")
        return self

    def sink_config(self) -> SinkConfig:
        return SinkConfig(broker=BrokerUrl("127.0.0.1", self.down.port), lake_root=self.workdir / "lake",
                          state_path=self.workdir / "state.sqlite", quarantine_dir=self.workdir / "quarantine",
                          vehicle_secret=self.secret, topic_prefix=self.topics.prefix,
                          client_id=f"sink-{self.topics.prefix}", dbc_paths=(dbc.REFERENCE_DBC,),
                          roll_interval_s=0.2, intake_batch=50)

    def start_sink(self) -> None:
        self.sink = Sink(self.sink_config())
        self._short_keepalive(self.sink.intake)
        self._sink_task = asyncio.create_task(self.sink.run(), name="sink")

    def _short_keepalive(self, intake: MqttIntake) -> None:
        intake.keepalive = self.keepalive
        intake._client.reconnect_delay_set(min_delay=0.1, max_delay=1)

    async def stop_sink(self) -> None:
        self.sink.stop()
        await self._sink_task

    async def __aexit__(self, *exc) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.sink is not None and not self._sink_task.done():
            await self.stop_sink()
        for o in self.outboxes.values():
            o.close()
        for p in (self.up, self.down):
            if p is not None:
                p.stop()
        await asyncio.to_thread(self.broker.stop)

    # -- traffic ----------------------------------------------------------------------------------

    def send(self, per_vehicle: int) -> None:
        """Finish ``per_vehicle`` more packets per vehicle into the gateways' outboxes."""
        n = len(self.schema.columns)
        for v in self.vehicles:
            for _ in range(per_vehicle):
                seq = self._next_seq[v]
                self._next_seq[v] += 1
                rng = np.random.default_rng(seq)
                values = rng.integers(0, 50, size=(n, ROWS), dtype=np.uint64)
                present = rng.random((n, ROWS)) > 0.1
                present[0, :] = True  # every row stored (a row with no value is not)
                p = MinutePacket(vehicle_id=v, model="ref", boot_id=self.boot, seq=seq,
                                 start_time=T0 + 60 * seq, fingerprint=self.schema.fingerprint,
                                 values=values, present=present)
                self.outboxes[v].put(self.topics.telemetry(v), encode(p, level=1))
                self.sent[(v, seq)] = ROWS
                self.publishers[v].wake.set()

    def outbox_depth(self) -> int:
        return sum(o.depth for o in self.outboxes.values())

    async def wait(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(what)
            await asyncio.sleep(0.05)

    async def drained(self, timeout: float = 60.0) -> None:
        """Wait until every outbox is empty (the broker acknowledged everything)."""
        await self.wait(lambda: self.outbox_depth() == 0, timeout, f"outboxes still hold {self.outbox_depth()}")

    def stored_keys(self) -> dict[tuple[str, int], list[int]]:
        """(masked vehicle, seq) -> row counts of each stored copy, read from the lake with DuckDB."""
        import duckdb

        lake = self.workdir / "lake"
        if not any(lake.rglob("*.parquet")):
            return {}
        rows = duckdb.connect().execute(
            f"SELECT vehicle, seq, file, count(*) FROM read_parquet('{lake}/**/*.parquet', hive_partitioning = true,"
            f" union_by_name = true, filename = 'file') GROUP BY ALL").fetchall()
        out: dict[tuple[str, int], list[int]] = {}
        for vehicle, seq, _file, n in rows:
            out.setdefault((vehicle, int(seq)), []).append(int(n))
        return out

    async def settled(self, timeout: float = 60.0) -> None:
        """Wait until the outboxes are empty and every sent packet is stored or the sink's gap
        detector counts it as missing (the broker lost it)."""
        await self.drained(timeout)

        def done() -> bool:
            v = self.verdict()
            return v.stored + v.lost_in_gaps >= v.sent

        await self.wait(done, timeout, "the lake does not account for every packet")

    def gaps(self) -> set[tuple[str, int]]:
        """(vehicle, seq) of every seq the sink's gap detector reports missing."""
        out = set()
        for g in union_gaps([self.workdir / "state.sqlite"]):
            out.update((g.vehicle, s) for s in range(g.first, g.last + 1))
        return out

    def verdict(self) -> Verdict:
        stored = self.stored_keys()
        masks = {mask_vehicle(self.secret, v): v for v in self.vehicles}
        by_key = {(masks[m], s): copies for (m, s), copies in stored.items()}
        lost = [k for k in self.sent if k not in by_key]
        gaps = self.gaps()
        return Verdict(sent=len(self.sent), stored=sum(1 for k in self.sent if k in by_key),
                       duplicated=sum(len(c) - 1 for c in by_key.values()), lost=len(lost),
                       lost_in_gaps=sum(1 for k in lost if k in gaps), gap_packets=len(gaps),
                       altered=sum(1 for k, c in by_key.items() if k not in self.sent or sum(c) != len(c) * self.sent[k]))
