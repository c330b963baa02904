"""A small real filesystem for full-disk tests: a tmpfs of a few MiB mounted on a temporary folder.

Needs root and a kernel that lets this process mount (true in the project's sandbox and on a
developer's machine under sudo); elsewhere the test is skipped, saying why. The deterministic
fault-point tests beside each such test cover the same code without a mount.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_fs(path: Path, mib: int) -> Iterator[Path]:
    """Mount a ``mib`` MiB tmpfs on ``path`` (created), yield it, unmount it."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a small real filesystem needs root and mount(8): covered by the fault-point test")
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mib}m,mode=0700", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a {mib} MiB tmpfs here ({done.stderr.strip()}): covered by the fault-point test")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)
