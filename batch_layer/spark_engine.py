"""Apache Spark as the engine: the same view stages, translated from DuckDB's dialect by sqlglot.

Local mode by default (``local[N]``); ``master`` (or ``DCM_SPARK_MASTER``) points it at a cluster
(``spark://host:7077``, ``yarn``, ``k8s://...``) and the lake root may then be any URI Spark reads
(``s3a://bucket/lake`` with hadoop-aws on the classpath and ``spark.hadoop.fs.s3a.*`` settings
passed in ``conf``). Needs ``pip install 'dcm-telemetry[spark]'`` and a Java runtime (Debian:
``default-jre-headless``).
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence

import pyarrow as pa

from .engine import EMPTY_LAKE, MATERIALISE
from .errors import EngineError

log = logging.getLogger(__name__)

_ROOT = re.compile(r"^(.*?)/(?:model|date)=")


def to_spark_sql(sql: str) -> str:
    """One stage's SELECT in Spark SQL (sqlglot, DuckDB dialect in)."""
    import sqlglot

    return sqlglot.transpile(sql, read="duckdb", write="spark")[0]


def _spark_type(t: pa.DataType):
    from pyspark.sql import types as T

    if pa.types.is_integer(t):
        return T.LongType()
    if pa.types.is_floating(t):
        return T.DoubleType()
    if pa.types.is_boolean(t):
        return T.BooleanType()
    if pa.types.is_timestamp(t):
        return T.TimestampType()
    return T.StringType()


class SparkEngine:
    """A SparkSession running the stages; ``cores`` sets ``local[cores]`` when no master is given."""

    name = "spark"

    def __init__(self, master: str | None = None, cores: int | None = None,
                 conf: Mapping[str, str] | None = None) -> None:
        try:
            from pyspark.sql import SparkSession
        except ImportError:
            raise EngineError("spark: PySpark is not installed (pip install 'dcm-telemetry[spark]')") from None
        master = master or os.environ.get("DCM_SPARK_MASTER") or f"local[{cores or '*'}]"
        builder = (SparkSession.builder.master(master).appName("dcm-batch-views")
                   .config("spark.sql.session.timeZone", "UTC")
                   .config("spark.sql.sources.partitionColumnTypeInference.enabled", "false")
                   .config("spark.sql.shuffle.partitions", str(max(2, 2 * (cores or os.cpu_count() or 2))))
                   .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
                   .config("spark.sql.execution.arrow.pyspark.enabled", "true"))
        for k, v in (conf or {}).items():
            builder = builder.config(k, v)
        try:
            self.spark = builder.getOrCreate()
        except Exception as exc:  # Java missing, bad master URL: py4j and pyspark raise many kinds
            raise EngineError(f"spark: cannot start a session on {master}: {exc}") from None
        self.spark.sparkContext.setLogLevel("ERROR")
        self._cached: list = []

    def load_lake(self, paths: Sequence[str]) -> list[str]:
        from pyspark.sql import types as T

        if not paths:
            schema = T.StructType([T.StructField(f.name, _spark_type(f.type)) for f in EMPTY_LAKE])
            df = self.spark.createDataFrame([], schema)
        else:
            m = _ROOT.match(paths[0])
            reader = self.spark.read.option("mergeSchema", "true")
            if m:
                reader = reader.option("basePath", m.group(1))
            try:
                df = reader.parquet(*paths)
            except Exception as exc:
                raise EngineError(f"spark: cannot read the lake: {exc}") from None
        df.createOrReplaceTempView("lake")
        return list(df.columns)

    def load_table(self, name: str, table: pa.Table) -> None:
        from pyspark.sql import types as T

        schema = T.StructType([T.StructField(f.name, _spark_type(f.type)) for f in table.schema])
        self.spark.createDataFrame(table.to_pylist(), schema).createOrReplaceTempView(name)

    def run(self, stages: Sequence[tuple[str, str]], outputs: Sequence[str]) -> dict[str, pa.Table]:
        for df in self._cached:
            df.unpersist()
        self._cached = []
        try:
            for name, sql in stages:
                df = self.spark.sql(to_spark_sql(sql))
                if name in MATERIALISE:
                    # computed now and cut from its lineage: a later stage's plan reads it as a
                    # scan instead of carrying every earlier stage's plan along (with cache()
                    # the plans nest, and printing one grew exponentially: the JVM ran out of heap)
                    df = df.localCheckpoint(eager=True)
                    self._cached.append(df)
                df.createOrReplaceTempView(name)
            return {o: self.spark.table(o).toArrow() for o in outputs}
        except EngineError:
            raise
        except Exception as exc:  # AnalysisException, Py4JJavaError
            raise EngineError(f"spark: {exc}") from None

    def close(self) -> None:
        for df in self._cached:
            df.unpersist()
        self._cached = []
