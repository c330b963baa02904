"""A full disk, for real (a 20 MiB tmpfs) and at a deterministic fault point: the gateway's outbox
budget follows the filesystem's free space (the oldest evicted, counted; the newest survive; no
put fails), and the sink's staging stops acknowledging instead of losing what it acknowledged."""
from __future__ import annotations

import asyncio
import errno
import sqlite3
import uuid

import pytest

import dbc
import faultpoints
from cloud_sink.service import Sink
from dcm.testing import until_async
from gateway.outbox import Outbox
from minute_packet import encode

from helpers.smallfs import small_fs
from test_sink import _config, _lake_rows, _packet, _publish
from test_sink_durable_ack import _acks

PACKET = 3500  # bytes: a reference car's minute packet


@pytest.fixture(autouse=True)
def _clean_hook():
    yield
    faultpoints.reset()


def _payload(i: int) -> bytes:
    import random

    return i.to_bytes(4, "big") + random.Random(i).randbytes(PACKET - 4)  # incompressible, numbered


def _fill(path) -> None:
    """Fill the filesystem of ``path`` to the last byte."""
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def _numbers(box: Outbox) -> list[int]:
    items, after = [], 0
    while batch := box.peek(500, after_id=after):
        items += batch
        after = batch[-1].id
    return [int.from_bytes(i.payload[:4], "big") for i in items]


def test_the_outbox_on_a_full_20_mib_filesystem_evicts_the_oldest_and_keeps_the_newest(tmp_path):
    with small_fs(tmp_path / "fs", 20) as fs:
        box = Outbox(fs / "outbox.sqlite", max_bytes=256 << 20)  # the configured budget alone is far too big
        n = 8000  # 28 MB of packets for 20 MiB of disk
        for i in range(n):
            box.put("dcm/V/telemetry", _payload(i))  # never "database or disk is full"
        kept = _numbers(box)
        assert kept == list(range(n - len(kept), n))  # the newest survive, in order, none missing
        assert box.stats.evicted_packets == n - len(kept) == box.stats.disk_evicted_packets > 1000
        assert box.budget < 20 << 20 and box.stats.stored == n
        # someone else fills the rest of the disk: the outbox still stores the newest, evicting older
        _fill(fs / "filler")
        for i in range(n, n + 300):
            box.put("dcm/V/telemetry", _payload(i))
        after = _numbers(box)
        assert after[-1] == n + 299 and after == list(range(after[0], n + 300))
        box.close()
        again = Outbox(fs / "outbox.sqlite")  # reopened: intact, the same packets
        assert _numbers(again) == after
        assert again._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        again.close()


def test_an_outbox_write_refused_as_disk_full_evicts_the_oldest_and_succeeds(tmp_path):
    box = Outbox(tmp_path / "o.sqlite")
    for i in range(10):
        box.put("t", _payload(i))
    refusals = []

    def full(point: str) -> None:
        if point == "outbox.put.before_commit" and len(refusals) < 2:
            refusals.append(point)
            raise sqlite3.OperationalError("database or disk is full")

    faultpoints.set_hook(full)
    box.put("t", _payload(10))
    assert refusals == ["outbox.put.before_commit"] * 2
    # tried with 0, 1, then 2 of the oldest evicted in the insert's own transaction (a refused one
    # rolls its evictions back): the two oldest are gone, the new one is stored
    assert _numbers(box) == list(range(2, 11))
    assert (box.stats.disk_full, box.stats.evicted_packets, box.stats.disk_evicted_packets) == (2, 2, 2)
    assert box.depth == 9 and box.bytes == 9 * PACKET


def test_the_sink_on_a_full_disk_acknowledges_nothing_until_it_can_stage(tmp_path, broker, schema):
    """Staging on a 20 MiB tmpfs filled to the last byte: packets arrive, nothing is staged or
    acknowledged (the broker keeps them); once space is back every packet is in the lake once."""
    with small_fs(tmp_path / "fs", 20) as fs:
        prefix = f"f{uuid.uuid4().hex[:6]}"
        boot = uuid.uuid4().bytes
        items = [(f"{prefix}/VF/telemetry", encode(_packet(schema, "VF", s, boot, rows=5)), False) for s in range(8)]

        async def main():
            sink = Sink(_config(tmp_path, broker, prefix, dbc_paths=(dbc.REFERENCE_DBC,),
                                state_path=fs / "state.sqlite", quarantine_dir=fs / "quarantine"))
            acks = _acks(sink)
            task = asyncio.create_task(sink.run())
            await asyncio.to_thread(sink.intake.connected.wait, 10)
            await asyncio.to_thread(_fill, fs / "filler")
            await asyncio.to_thread(_publish, broker, items)
            assert await until_async(lambda: sink.stats.staging_errors >= 2, 30)
            assert acks == [] and sink.stats.packets_staged == 0
            (fs / "filler").unlink()
            assert await until_async(lambda: sink.staging.keys.count("pending = 0") == 8, 60)
            sink.stop()
            await task
            return sink, acks

        sink, acks = asyncio.run(main())
        assert len(acks) == 8 and sink.stats.duplicates == 0
        assert _lake_rows(tmp_path / "lake", "VF").num_rows == 8 * 5
