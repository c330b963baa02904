"""Sequence gaps: per (vehicle, boot), the seq ranges never received below the highest one seen,
over one worker's staging database or the union of a share group's (read-only)."""
from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from .staging_db import StagingError

GAPS_SQL = """
WITH ordered AS (
    SELECT vehicle, boot, seq, LAG(seq, 1, -1) OVER (PARTITION BY vehicle, boot ORDER BY seq) AS prev
    FROM {source}
), floors AS (
    SELECT vehicle, boot, MAX(floor) AS floor FROM {streams} GROUP BY vehicle, boot
)
SELECT o.vehicle, o.boot, MAX(o.prev, COALESCE(f.floor, -1)) + 1, o.seq - 1
FROM ordered o LEFT JOIN floors f ON f.vehicle = o.vehicle AND f.boot = o.boot
WHERE o.seq > MAX(o.prev, COALESCE(f.floor, -1)) + 1 ORDER BY o.vehicle, o.boot, o.seq
"""


@dataclasses.dataclass(frozen=True)
class Gap:
    vehicle: str
    boot: bytes
    first: int
    last: int

    @property
    def missing(self) -> int:
        return self.last - self.first + 1



def union_gaps(paths: Sequence[str | Path]) -> list[Gap]:
    """Gaps over the union of several workers' staging databases (read-only)."""
    if not paths:
        return []
    db = sqlite3.connect("file::memory:", uri=True)
    try:
        for i, path in enumerate(paths):
            if not Path(path).exists():
                raise StagingError(f"{path}: no such staging database")
            db.execute(f"ATTACH DATABASE ? AS w{i}", (f"file:{Path(path).resolve()}?mode=ro",))
        source = "(" + " UNION ".join(f"SELECT vehicle, boot, seq FROM w{i}.packets" for i in range(len(paths))) + ")"
        streams = "(" + " UNION ALL ".join(f"SELECT vehicle, boot, floor FROM w{i}.streams"
                                           for i in range(len(paths))) + ")"
        return [Gap(v, bytes(b), a, z) for v, b, a, z in db.execute(GAPS_SQL.format(source=source, streams=streams))]
    except sqlite3.Error as exc:
        raise StagingError(f"{', '.join(map(str, paths))}: {exc}") from exc
    finally:
        db.close()
