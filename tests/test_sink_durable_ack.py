"""No acknowledgement leaves before the durable write: the staging commit is failed (as a full
disk fails it) or blocked at its fault point while a real Mosquitto delivers; the sink must send no
PUBACK meanwhile, and once the disk recovers every packet is in the lake exactly once."""
from __future__ import annotations

import asyncio
import sqlite3
import threading
import uuid

import pytest

import dbc
import faultpoints
from cloud_sink.service import Sink
from dcm.testing import until_async
from minute_packet import encode

from test_sink import _config, _lake_rows, _packet, _publish


@pytest.fixture(autouse=True)
def _clean_hook():
    yield
    faultpoints.reset()


def _acks(sink: Sink) -> list[int]:
    """Record the mids the sink acknowledges (at the MQTT client, where the PUBACK is sent)."""
    sent: list[int] = []
    client = sink.intake._client
    real = client.ack

    def ack(mid, qos):
        sent.append(mid)
        return real(mid, qos)

    client.ack = ack
    return sent


@pytest.mark.parametrize("mode", ["fail", "block"])
def test_no_ack_while_the_staging_commit_fails_or_blocks(tmp_path, broker, schema, mode):
    prefix = f"d{uuid.uuid4().hex[:6]}"
    boot = uuid.uuid4().bytes
    items = [(f"{prefix}/VD/telemetry", encode(_packet(schema, "VD", s, boot, rows=5)), False) for s in range(6)]
    disk_ok = threading.Event()
    attempts = []

    def hook(point: str) -> None:
        if point != "sink.stage.before_commit" or disk_ok.is_set():
            return
        attempts.append(point)
        if mode == "fail":
            raise sqlite3.OperationalError("database or disk is full (injected)")
        disk_ok.wait(30)  # a disk that hangs

    async def main():
        sink = Sink(_config(tmp_path, broker, prefix, dbc_paths=(dbc.REFERENCE_DBC,)))
        acks = _acks(sink)
        task = asyncio.create_task(sink.run())
        await asyncio.to_thread(sink.intake.connected.wait, 10)
        faultpoints.set_hook(hook)
        await asyncio.to_thread(_publish, broker, items)
        assert await until_async(lambda: len(attempts) >= (2 if mode == "fail" else 1), 20)
        await asyncio.sleep(1.0)  # time enough for an early PUBACK to show
        assert acks == []
        if mode == "fail":  # rolled back: nothing staged either
            assert sink.staging.keys.count() == 0
        disk_ok.set()
        assert await until_async(lambda: sink.staging.keys.count("pending = 0") == 6, 30)
        sink.stop()
        await task
        return sink, acks

    sink, acks = asyncio.run(main())
    assert len(acks) == 6
    assert _lake_rows(tmp_path / "lake", "VD").num_rows == 6 * 5
    if mode == "fail":
        assert sink.stats.staging_errors >= 2
