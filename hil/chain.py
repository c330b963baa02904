"""Gateway (on a real SocketCAN interface) → Mosquitto → sink → Parquet, for one HIL test."""
from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import can

from cloud_sink.lake import mask_vehicle
from cloud_sink.service import Sink, SinkConfig
from dcm.broker import BrokerUrl
from dcm.groundtruth import FrameRecorder, compare, read_lake_vehicle
from dcm.testing import until_async
from gateway.decoder import frame_key
from gateway.service import Gateway, GatewayConfig

from .rig import play, witness

SECRET = b"dcm-hil-secret"


async def settled(count: Callable[[], int], target: int, *, quiet_s: float = 3.0, timeout: float = 120) -> int:
    """Wait until ``count()`` reaches ``target`` or stops growing for ``quiet_s``; returns it."""
    deadline = time.monotonic() + timeout
    last, since = count(), time.monotonic()
    while time.monotonic() < deadline:
        now = count()
        if now >= target:
            return now
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since > quiet_s:
            return now
        await asyncio.sleep(0.05)
    return count()


@dataclasses.dataclass(frozen=True)
class Played:
    """What :meth:`Chain.play` saw: the frames the interface carried (candump witness), the
    witness's socket drops, and the wall-clock span of the playback."""

    carried: list[can.Message]
    drops: list[str]
    began: float
    ended: float


@dataclasses.dataclass
class Chain:
    """One vehicle's gateway on ``channel`` and a sink, both on ``broker``; ``seen`` records every
    frame the gateway's source returned to Python and ``sample_times`` every time given to the sampler."""

    work: Path
    broker: BrokerUrl
    channel: str
    dbc_path: Path
    gateway_kw: dict[str, Any] = dataclasses.field(default_factory=dict)
    bus: can.BusABC | None = None  # given: the gateway uses it instead of opening its own

    def __post_init__(self) -> None:
        run = uuid.uuid4().hex[:8]
        self.vehicle_id = f"HIL{run.upper()}"
        self.prefix = f"dcm-hil-{run}"
        self.sink = Sink(SinkConfig(
            broker=self.broker, lake_root=self.work / "lake", state_path=self.work / "sink" / "state.sqlite",
            quarantine_dir=self.work / "sink" / "quarantine", vehicle_secret=SECRET, topic_prefix=self.prefix,
            client_id=f"dcm-hil-sink-{run}", dbc_paths=(self.dbc_path,), roll_interval_s=3600,
        ))
        self.gw = Gateway(GatewayConfig(
            vehicle_id=self.vehicle_id, broker=self.broker, outbox_path=self.work / "outbox.sqlite",
            dbc_path=self.dbc_path, interface="socketcan", channel=self.channel, topic_prefix=self.prefix,
            **self.gateway_kw), bus=self.bus)
        self.seen: list[can.Message] = []
        self.sample_times: list[float] = []
        self._wrap()
        self._tasks: list[asyncio.Task] = []

    def _wrap(self) -> None:
        source, sampler = self.gw.source, self.gw.sampler
        recv, add = source.recv, sampler.add

        def recv_and_record(timeout: float):
            msg = recv(timeout)
            if msg is not None:
                self.seen.append(msg)
            return msg

        def add_and_record(timestamp, key, data):
            self.sample_times.append(timestamp)
            return add(timestamp, key, data)

        source.recv = recv_and_record  # the reader looks both up on the instance
        sampler.add = add_and_record

    async def play(self, log: Path, rx: str, tx: str, witness_log: Path, *,
                   expect: Callable[[list[can.Message]], int] | None = None) -> Played:
        """Start the chain, play ``log`` onto ``tx`` (canplayer) while a candump on ``rx`` records
        what the interface carried, then stop once the gateway has read ``expect(carried)`` frames
        (default: all of them)."""
        with witness(rx, tx, witness_log) as w:
            await self.start()
            began = time.time()
            await asyncio.to_thread(play, log, tx)
            ended = time.time()
        carried = w.frames()
        await self.stop(expect_frames=expect(carried) if expect else len(carried))
        return Played(carried, w.drops(), began, ended)

    @property
    def collected_keys(self) -> set[int]:
        return set(self.gw.sampler.decoder.plans)

    def collected(self, frames: list[can.Message]) -> list[can.Message]:
        """The data frames of ``frames`` the gateway's configuration collects."""
        keys = self.collected_keys
        return [m for m in frames if not m.is_error_frame and frame_key(m.arbitration_id, m.is_extended_id) in keys]

    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self.sink.run(), name="sink"))
        if not await asyncio.to_thread(self.sink.intake.connected.wait, 30):
            raise RuntimeError(f"sink could not connect to {self.broker}")
        self._tasks.append(asyncio.create_task(self.gw.run(), name="gateway"))
        if not await until_async(lambda: self.gw.source.bus is not None, 30):
            raise RuntimeError(f"gateway did not open {self.channel}")

    async def stop(self, *, expect_frames: int | None = None, timeout: float = 60) -> None:
        """Stop the gateway (after it has read ``expect_frames``), wait until the sink has every
        packet, stop the sink."""
        if expect_frames is not None:
            await settled(lambda: self.gw.source.stats.frames, expect_frames)
        gw_task, sink_task = self._tasks[1], self._tasks[0]
        self.gw.stop()
        await asyncio.wait_for(gw_task, timeout)
        published = self.gw.publisher.stats.published
        await until_async(lambda: self.sink.stats.packets_staged + self.sink.stats.duplicates >= published, timeout)
        self.sink.stop()
        await asyncio.wait_for(sink_task, timeout)

    def stored(self) -> dict[int, dict[str, Any]]:
        return read_lake_vehicle(self.work / "lake", mask_vehicle(SECRET, self.vehicle_id))

    def expected(self, frames: list[can.Message]) -> dict[int, dict[str, Any]]:
        rec = FrameRecorder(self.gw.db)
        for msg in self.collected(frames):
            rec.add(msg)
        return rec.expected(self.gw.schema)

    def mismatches(self, frames: list[can.Message]) -> int:
        columns = [c.name for c in self.gw.schema.columns if c.aggregate == "last"]
        return compare(self.expected(frames), self.stored(), columns)
