"""The lake-writer loop: cut batches when the roll policy says so, write them, retry on failure,
and the hourly housekeeping (prune old dedupe keys, quarantine packets parked too long)."""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

import faultpoints
import pyarrow as pa

from dcm_base.backoff import Backoff
from minute_packet import Schema, Topics

from .lake import LakeError
from .metrics import SinkStats
from .quarantine import Quarantine
from .roll import RollPolicy
from .staging import Staging, StagingError
from .writer import LakeWriter

log = logging.getLogger(__name__)

HOUSEKEEPING_S = 3600.0


class LakeLoop:
    """Moves staged packets with a known schema into the lake, batch by batch."""

    def __init__(self, *, staging: Staging, writer: LakeWriter, quarantine: Quarantine,
                 schemas: Mapping[bytes, Schema], policy: RollPolicy, stats: SinkStats, topics: Topics,
                 dedupe_days: float, park_days: float) -> None:
        self.staging, self.writer, self.quarantine, self.schemas = staging, writer, quarantine, schemas
        self.policy, self.stats, self.topics = policy, stats, topics
        self.dedupe_days, self.park_days = dedupe_days, park_days
        self._backoff = Backoff(1.0, 60.0)
        self._next_housekeeping = 0.0

    def roll_due(self) -> bool:
        queue = self.staging.queue
        return self.policy.due(queue.unfinished_batch(), queue.backlog(self.schemas), time.time())

    def flush(self) -> int:
        """Write every staged packet with a known schema to the lake; returns packets written."""
        written = 0
        while (job := self.staging.queue.assign_batch(list(self.schemas), self.policy.max_packets)) is not None:
            batch, redo, staged = job
            faultpoints.hit("sink.assign.committed")
            if redo:
                log.warning("batch %d was interrupted; writing it again (%d packets)", batch, len(staged))
            result = self.writer.write_batch(batch, redo, staged)
            self.staging.finish_batch(batch, result.files, result.latest)
            self.stats.packets_written += result.packets
            self.stats.rows_written += result.rows
            self.stats.files_written += len(result.files)
            self.stats.batches += 1
            self.stats.out_of_range.update(result.out_of_range)
            written += result.packets
            log.info("batch %d: %d packets, %d rows, %d files", batch, result.packets, result.rows, len(result.files))
        return written

    def expire_parked(self, now: float | None = None) -> int:
        """Quarantine packets parked longer than ``park_days`` (their schema never arrived), so
        staging stays bounded; returns how many. A packet's bytes leave staging only after its
        quarantine copy is written; one the quarantine cannot keep (too large, a failing disk,
        no quarantine at all) stays parked, with a warning, and is tried again next time."""
        cutoff = (time.time() if now is None else now) - self.park_days * 86400
        queue, total = self.staging.queue, 0
        while True:
            expired = queue.parked_before(cutoff, 1000)
            kept = []
            for row in expired:
                _id, vehicle, _boot, seq, fp, payload = row
                if not self.quarantine.put("schema_never_arrived", self.topics.telemetry(vehicle), payload,
                                           f"seq {seq}: schema {fp.hex()} unknown after {self.park_days:g} days",
                                           only_if_kept=True):
                    break
                kept.append(_id)
            if kept:
                total += queue.forget_parked(kept)
            if len(kept) < len(expired):
                log.warning("the quarantine cannot keep expired parked packets: %d stay in staging",
                            len(expired) - len(kept))
                break
            if not expired:
                break
        if total:
            log.warning("%d parked packets quarantined: their schema never arrived", total)
        return total

    async def run(self, stop: asyncio.Event, wake: asyncio.Event) -> None:
        """Until ``stop``: every policy tick (or at once when ``wake`` is set) write what is due."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(wake.wait(), timeout=self.policy.tick_s)
                wake.clear()
                force = True
            except TimeoutError:
                force = False
            try:
                if force or await asyncio.to_thread(self.roll_due):
                    await asyncio.to_thread(self.flush)
            except (LakeError, StagingError, OSError, pa.ArrowException) as exc:
                # the unfinished batch stays in staging and is written again (same file names)
                self.stats.write_errors += 1
                delay = self._backoff.next()
                log.error("writing to the lake failed, retrying in %.0f s: %s", delay, exc)
                await asyncio.sleep(delay)
                continue
            self._backoff.reset()
            if time.monotonic() >= self._next_housekeeping:
                self._next_housekeeping = time.monotonic() + HOUSEKEEPING_S
                await self._housekeeping()

    async def _housekeeping(self) -> None:
        cutoff = time.time() - self.dedupe_days * 86400
        try:
            pruned = await asyncio.to_thread(self.staging.keys.prune, cutoff)
            if pruned:
                log.info("pruned %d dedupe keys older than %g days", pruned, self.dedupe_days)
            await asyncio.to_thread(self.expire_parked)
        except (StagingError, OSError) as exc:  # tried again in an hour
            log.error("staging housekeeping failed: %s", exc)
