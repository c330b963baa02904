"""A vehicle's columns per lake file, kept in memory, and the series buckets computed from them.

A series request over a day reads the same files again and again with another range or step
(a person scrolling a chart, a dashboard refreshing). Lake files never change, so the rows of one
vehicle in one file, for one signal, are read once with DuckDB and kept as numpy arrays
(``ColumnCache``, keyed by file, size, modification time, vehicle and signal; bounded in bytes,
least recently used evicted first, counted). A request then only concatenates the arrays of its
files and reduces them into buckets (:func:`bucketise`), which gives the answer the SQL query of
:mod:`fleet_api.series` gives: min and max exact, mean over the non-null values, count of them
(a packet stored twice weighs twice in both).
"""
from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

DEFAULT_BYTES = 256 * 2**20

Key = tuple[str, tuple[int, int], str, str]  # file, (size, mtime_ns), vehicle, column ("" for ts)


class ColumnCache:
    """``(file, stamp, vehicle, column) -> array`` under a byte budget (LRU)."""

    def __init__(self, max_bytes: int = DEFAULT_BYTES) -> None:
        self.max_bytes = max_bytes
        self._items: collections.OrderedDict[Key, np.ndarray] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0
        self.hits = self.misses = self.evicted = 0

    def get(self, key: Key) -> np.ndarray | None:
        with self._lock:
            arr = self._items.get(key)
            if arr is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return arr

    def put(self, key: Key, arr: np.ndarray) -> None:
        if arr.nbytes > self.max_bytes:
            with self._lock:
                self.evicted += 1
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.bytes -= old.nbytes
            self._items[key] = arr
            self.bytes += arr.nbytes
            while self.bytes > self.max_bytes:
                _, gone = self._items.popitem(last=False)
                self.bytes -= gone.nbytes
                self.evicted += 1


# reads (files, vehicle, signals) -> {file: (t seconds int64, {signal: float64 with NaN for null})}
Reader = Callable[[Sequence[str], str, Sequence[str]], dict[str, tuple[np.ndarray, dict[str, np.ndarray]]]]


def columns_for(cache: ColumnCache, read: Reader, files: Sequence[tuple[str, tuple[int, int]]], vehicle: str,
                signals: Sequence[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The vehicle's timestamps and signal values over ``files`` (path, stamp), from the cache or
    read (one query for every file that misses a column)."""
    have: dict[str, dict[str, np.ndarray]] = {}
    missing: list[str] = []  # files with a column not in the cache: read again whole
    for path, stamp in files:
        got = {}
        for col in ("", *signals):
            arr = cache.get((path, stamp, vehicle, col))
            if arr is None:
                missing.append(path)
                break
            got[col] = arr
        have[path] = got
    if missing:
        fetched = read(missing, vehicle, list(signals))
        stamps = dict(files)
        for path in missing:
            t, vals = fetched.get(path, (np.empty(0, np.int64), {}))
            got = {"": t}
            for s in signals:
                got[s] = vals.get(s, np.full(len(t), np.nan))
            for col, arr in got.items():
                cache.put((path, stamps[path], vehicle, col), arr)
            have[path] = got
    parts = [have[p] for p, _ in files if len(have[p].get("", ())) > 0]
    if not parts:
        return np.empty(0, np.int64), {s: np.empty(0) for s in signals}
    return (np.concatenate([p[""] for p in parts]),
            {s: np.concatenate([p[s] for p in parts]) for s in signals})


def bucketise(t: np.ndarray, values: dict[str, np.ndarray], t0: int, t1: int, width: int) -> dict[str, Any]:
    """Rows with ``t0 <= t < t1`` grouped into ``width``-second buckets from ``t0``:
    ``{"t": [...], "signals": {name: {"min", "max", "mean", "count"}}}`` (min, max, mean None where
    a bucket has no value of that signal; mean rounded to 6 decimals)."""
    keep = (t >= t0) & (t < t1)
    b = (t[keep] - t0) // width
    order = np.argsort(b, kind="stable")
    b = b[order]
    out: dict[str, Any] = {"t": [], "signals": {}}
    if len(b) == 0:
        out["signals"] = {s: {"min": [], "max": [], "mean": [], "count": []} for s in values}
        return out
    starts = np.concatenate(([0], np.flatnonzero(np.diff(b)) + 1))
    out["t"] = (t0 + b[starts] * width).tolist()
    for s, v in values.items():
        v = v[keep][order].astype(np.float64, copy=False)
        ok = ~np.isnan(v)
        n = np.add.reduceat(ok.astype(np.int64), starts)
        total = np.add.reduceat(np.where(ok, v, 0.0), starts)
        with np.errstate(all="ignore"):
            mn = np.fmin.reduceat(v, starts)
            mx = np.fmax.reduceat(v, starts)
            mean = np.round(total / n, 6)
        none = n == 0
        out["signals"][s] = {"min": _listed(mn, none), "max": _listed(mx, none), "mean": _listed(mean, none),
                             "count": n.tolist()}
    return out


def _listed(arr: np.ndarray, none: np.ndarray) -> list[float | None]:
    vals = arr.tolist()
    for i in np.flatnonzero(none | np.isnan(arr)).tolist():
        vals[i] = None
    return vals
