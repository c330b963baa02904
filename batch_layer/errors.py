"""Typed errors of the batch layer (CLIs turn them into one-line messages)."""
from __future__ import annotations


class BatchLayerError(Exception):
    """Base class of every batch-layer error."""


class BatchConfigError(BatchLayerError, ValueError):
    """A batch-layer TOML file or parameter is invalid (names the key)."""


class EnrichmentError(BatchLayerError):
    """An operational table is missing, malformed or inconsistent (names the table and row)."""


class LakeError(BatchLayerError):
    """The lake cannot be read (missing root, no Parquet files, unreadable schema)."""


class EngineError(BatchLayerError):
    """A query engine failed or is not installed (e.g. PySpark or Java missing)."""
