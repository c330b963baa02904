"""The lake as the batch layer sees it: its Parquet files, grouped by the ``date=`` partition.

:func:`list_lake` walks a lake root (a folder or any ``pyarrow.fs`` URI) and returns the data files
with their size and UTC day number; files being written (``.tmp``), compaction manifests
(``_compaction-*.json``) and hidden files are skipped. :func:`day_fingerprint` says whether the
files behind a day changed (lake files are immutable: a new batch or a compaction changes the set).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import re
from collections.abc import Iterable

from .errors import LakeError

_DATE = re.compile(r"(?:^|/)date=(\d{4}-\d{2}-\d{2})(?:/|$)")
EPOCH = dt.date(1970, 1, 1)


def day_of(date: str | dt.date) -> int:
    """UTC day number (days since 1970-01-01) of an ISO date."""
    d = dt.date.fromisoformat(date) if isinstance(date, str) else date
    return (d - EPOCH).days


def date_of(day: int) -> str:
    return (EPOCH + dt.timedelta(days=int(day))).isoformat()


@dataclasses.dataclass(frozen=True)
class LakeFile:
    path: str  # what the engines read (absolute path or URI)
    rel: str  # path below the root
    size: int
    day: int


@dataclasses.dataclass(frozen=True)
class LakeListing:
    root: str
    files: tuple[LakeFile, ...]

    @property
    def days(self) -> list[int]:
        return sorted({f.day for f in self.files})

    def files_for(self, days: Iterable[int]) -> list[LakeFile]:
        want = set(days)
        return [f for f in self.files if f.day in want]

    def fingerprint(self, days: Iterable[int]) -> str:
        return day_fingerprint(self.files_for(days))


def day_fingerprint(files: Iterable[LakeFile]) -> str:
    h = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.rel):
        h.update(f"{f.rel}\0{f.size}\n".encode())
    return h.hexdigest()[:20]


def list_lake(root: str) -> LakeListing:
    """Every data file of the lake at ``root`` (a folder, ``file://`` or another pyarrow.fs URI)."""
    import pyarrow.fs as pafs

    try:
        if "://" in root:
            fs, base = pafs.FileSystem.from_uri(root)
        else:
            fs, base = pafs.LocalFileSystem(), str(root)
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True))
    except (OSError, ValueError, pafs.ArrowException if hasattr(pafs, "ArrowException") else OSError) as exc:
        raise LakeError(f"{root}: cannot list the lake: {exc}") from None
    local = isinstance(fs, pafs.LocalFileSystem)
    files = []
    for info in infos:
        if info.type != pafs.FileType.File or not info.path.endswith(".parquet"):
            continue
        rel = info.path[len(base):].lstrip("/")
        if any(part.startswith((".", "_")) for part in rel.split("/")):
            continue
        m = _DATE.search(rel)
        if not m:
            continue
        path = info.path if local else root.split("://")[0] + "://" + info.path
        files.append(LakeFile(path, rel, int(info.size or 0), day_of(m.group(1))))
    return LakeListing(str(root), tuple(sorted(files, key=lambda f: f.rel)))
