"""Errors the CLI turns into exit codes."""
from __future__ import annotations


class InputError(Exception):
    """Bad input named by the user (a file, key or option): one line on stderr, exit code 2."""
