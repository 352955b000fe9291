"""Let the heap keep the pages of large freed buffers instead of handing them back to the kernel.

Why: every C-STORE of a CT slice allocates several buffers of 128 kB to 0.5 MB (the PDUs, the
joined data set, the Part 10 bytes) and frees them a moment later. glibc serves such sizes with
fresh ``mmap`` calls, or trims them off the heap as soon as they are freed, so each instance pays a
page fault for every 4 kB it touches: on this machine about 2 ms of CPU of a 6 ms C-STORE
(``bench/ingest.py``). With higher mmap and trim thresholds the heap reuses the same pages. The
cost is that up to ``trim_threshold`` of freed memory stays with the process; allocations above
``mmap_threshold`` (whole volumes during analysis) still go straight back to the kernel.

Only glibc has ``mallopt``; elsewhere (musl, macOS) this does nothing and says so.
"""

from __future__ import annotations

import ctypes

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def retain_freed_buffers(mmap_threshold: int = 16 << 20, trim_threshold: int = 64 << 20) -> bool:
    """Raise the C allocator's thresholds for this process; ``True`` where the allocator took them."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))
