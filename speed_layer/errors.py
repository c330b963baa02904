"""Typed errors of the speed layer, a branch of the project's tree (:mod:`dcm_base.errors`);
only the CLI turns them into messages and exit codes."""
from __future__ import annotations

from dcm_base.errors import ConfigError, DcmError, InputError
from minute_packet.condition import ConditionError  # the condition language lives in the wire package

__all__ = ["ConditionError", "RulesConfigError", "SpeedLayerError", "StoreError"]


class SpeedLayerError(DcmError):
    """Base of every error the speed layer raises on purpose."""


class RulesConfigError(SpeedLayerError, ConfigError):
    """The rules or service configuration is invalid; the message names the file and the key."""


class StoreError(SpeedLayerError, InputError):
    """The state database cannot be opened or has a layout this version does not read."""
