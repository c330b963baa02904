"""Typed errors of the batch layer, a branch of the project's tree (:mod:`dcm_base.errors`)
(CLIs turn them into one-line messages)."""
from __future__ import annotations

from dcm_base.errors import ConfigError, DcmError, InputError, ServiceError


class BatchLayerError(DcmError):
    """Base class of every batch-layer error."""


class BatchConfigError(BatchLayerError, ConfigError, ValueError):
    """A batch-layer TOML file or parameter is invalid (names the key)."""


class EnrichmentError(BatchLayerError, InputError):
    """An operational table is missing, malformed or inconsistent (names the table and row)."""


class LakeError(BatchLayerError, InputError):
    """The lake cannot be read (missing root, no Parquet files, unreadable schema)."""


class EngineError(BatchLayerError, ServiceError):
    """A query engine failed or is not installed (e.g. PySpark or Java missing)."""
