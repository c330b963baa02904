"""Batch layer: trips, harsh events, driver scores and yearly figures over the Parquet lake.

The view definitions are written once as SQL (:mod:`batch_layer.views_sql`, DuckDB dialect) and run
in-process on DuckDB or, translated by sqlglot, on Apache Spark. :mod:`batch_layer.lambda_views`
materialises them per date up to a watermark and merges them with views computed on the fly for
what arrived after it. See ``docs/batch-layer.md``.
"""
