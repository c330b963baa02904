"""Typed errors of the speed layer, a branch of the project's tree (:mod:`dcm_base.errors`);
only the CLI turns them into messages and exit codes."""
from __future__ import annotations

from dcm_base.errors import ConfigError, DcmError, InputError


class SpeedLayerError(DcmError):
    """Base of every error the speed layer raises on purpose."""


class ConditionError(SpeedLayerError, InputError):
    """A condition does not parse or names something that does not exist.

    ``position`` is the 0-based character offset of the problem in ``text`` (or None)."""

    def __init__(self, message: str, text: str = "", position: int | None = None) -> None:
        self.text = text
        self.position = position
        where = f" at column {position + 1}" if position is not None else ""
        shown = f" in {text!r}" if text else ""
        super().__init__(f"{message}{where}{shown}")


class RulesConfigError(SpeedLayerError, ConfigError):
    """The rules or service configuration is invalid; the message names the file and the key."""


class StoreError(SpeedLayerError, InputError):
    """The state database cannot be opened or has a layout this version does not read."""
