"""Keep freed heap memory for reuse (glibc ``mallopt``).

The sink's lake writer allocates arrays of several MiB for every chunk it decodes (about 7 MiB
for the largest at the default 64 packets of 218 columns) and frees them once their row group is
written. With glibc's defaults, the freed heap top is trimmed (or large blocks unmapped) each
time, so the next chunk pays page faults to touch fresh zero pages: about 30 µs of system time
per packet in ``dcm bench sink``. Raising the mmap and trim thresholds keeps that memory in the
heap for the next chunk; the cost is that up to ``keep_mib`` of freed memory per malloc arena
stays resident.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_MAX = 32 << 20  # glibc's upper limit on 64-bit systems


def keep_freed_memory(keep_mib: int = 256) -> bool:
    """Serve blocks up to 32 MiB from the heap and keep up to ``keep_mib`` MiB of free heap top.

    Process-wide; returns True when both thresholds were set, False where the C library has no
    ``mallopt`` (nothing changed) or refused a value (the allocator may be partly tuned)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and bool(mallopt(M_TRIM_THRESHOLD, keep_mib << 20))
    if not ok:
        log.debug("mallopt refused the thresholds; allocator left at its defaults")
    return ok
