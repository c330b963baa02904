"""Query engines that run the view stages: DuckDB in-process (default) and Spark (``spark_engine``).

An engine registers the lake's files as ``lake`` and Arrow tables by name, runs ``(name, SELECT)``
stages written in DuckDB's dialect, and returns the requested stages as Arrow tables. The stage
text is the same for every engine; :class:`~batch_layer.spark_engine.SparkEngine` translates it
with sqlglot.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

import pyarrow as pa

from .errors import EngineError

log = logging.getLogger(__name__)


def _arrow(relation) -> pa.Table:
    """A DuckDB relation as an Arrow table (``to_arrow_table`` in 2.x, ``arrow`` in 1.x)."""
    fetch = getattr(relation, "to_arrow_table", None) or relation.arrow
    return fetch()

# stages read by several later ones: computed once per run
MATERIALISE = frozenset({"keys", "raw", "dupv", "feat_dup", "spans", "ev_rows", "trip_raw", "ev_raw", "trips"})
EMPTY_LAKE = pa.schema([("vehicle", pa.string()), ("ts", pa.timestamp("us", tz="UTC")), ("model", pa.string())])


class Engine(Protocol):
    name: str

    def load_lake(self, paths: Sequence[str]) -> list[str]: ...

    def load_table(self, name: str, table: pa.Table) -> None: ...

    def run(self, stages: Sequence[tuple[str, str]], outputs: Sequence[str]) -> dict[str, pa.Table]: ...

    def close(self) -> None: ...


class DuckDBEngine:
    """DuckDB in this process; ``threads`` defaults to DuckDB's (one per core)."""

    name = "duckdb"

    def __init__(self, threads: int | None = None, memory_limit: str | None = None) -> None:
        import duckdb

        self._duckdb = duckdb
        self.con = duckdb.connect()
        self.con.execute("SET TimeZone = 'UTC'")
        if threads:
            self.con.execute(f"SET threads = {int(threads)}")
        if memory_limit:
            self.con.execute("SET memory_limit = ?", [memory_limit])
        self.con.execute("SET preserve_insertion_order = false")
        self.con.execute("SET enable_progress_bar = false")
        self.con.execute("SET parquet_metadata_cache = true")  # the lake is read by several stages
        self._created: dict[str, str] = {}

    def load_lake(self, paths: Sequence[str]) -> list[str]:
        self.con.execute("DROP VIEW IF EXISTS lake")
        if not paths:
            self.con.register("lake_empty", EMPTY_LAKE.empty_table())
            self.con.execute("CREATE OR REPLACE TEMP VIEW lake AS SELECT * FROM lake_empty")
        else:
            files = "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"
            try:
                self.con.execute(f"CREATE OR REPLACE TEMP VIEW lake AS SELECT * FROM read_parquet({files},"
                                 f" hive_partitioning = true, union_by_name = true)")
            except self._duckdb.Error as exc:
                raise EngineError(f"duckdb: cannot read the lake: {exc}") from None
        return [r[0] for r in self.con.execute("DESCRIBE lake").fetchall()]

    def load_table(self, name: str, table: pa.Table) -> None:
        self.con.register(f"{name}__arrow", table)
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT * FROM {name}__arrow")
        self.con.unregister(f"{name}__arrow")

    def run(self, stages: Sequence[tuple[str, str]], outputs: Sequence[str]) -> dict[str, pa.Table]:
        try:
            for name, sql in stages:
                kind = "TABLE" if name in MATERIALISE else "VIEW"
                old = self._created.pop(name, None)
                if old:
                    self.con.execute(f"DROP {old} {name}")
                self._created[name] = kind
                self.con.execute(f"CREATE TEMP {kind} {name} AS {sql}")
            return {o: _arrow(self.con.sql(f"SELECT * FROM {o}")) for o in outputs}
        except self._duckdb.Error as exc:
            raise EngineError(f"duckdb: {exc}") from None

    def query(self, sql: str, **tables: pa.Table) -> pa.Table:
        """Run one SELECT over Arrow tables registered under the given names."""
        for name, t in tables.items():
            self.con.register(name, t)
        try:
            return _arrow(self.con.sql(sql))
        finally:
            for name in tables:
                self.con.unregister(name)

    def close(self) -> None:
        self.con.close()
