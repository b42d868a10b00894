"""glibc's allocator tuned for a process that moves megabyte buffers all day.

By default glibc serves every allocation above 128 KiB (its dynamic threshold grows, but is reset
by trims) with a fresh mmap and gives it back with munmap on free: each 1 MiB read buffer then costs
256 page faults and the kernel's zeroing, about 0.9 ms per MiB here, more than the read itself
(scripts/bench --shelf's profile). With large buffers served from the heap and the heap kept (up to
TRIM_BYTES) a 1 MiB buffer costs about 0.08 ms. The memory kept is bounded by TRIM_BYTES beyond
what is in use; the soak's RSS check still holds.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_BYTES = 32 << 20  # allocations below this come from the heap (a transfer is at most 8 MiB + headers)
TRIM_BYTES = 64 << 20  # free heap kept for the next buffers before it is given back


def tune() -> bool:
    """Set the thresholds (once per process; harmless again); False where there is no glibc."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_BYTES))
    if not ok:
        log.debug("mallopt refused the thresholds; large buffers stay mmapped")
    return ok
