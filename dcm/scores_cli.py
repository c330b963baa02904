"""``dcm scores``: see :mod:`dcm.batch_cli`."""
from __future__ import annotations

from dcm.batch_cli import add_scores_parser as add_parser, run

__all__ = ["add_parser", "run"]
