"""Keep the process's memory close to what Python holds: at most a few glibc malloc arenas.

glibc gives threads their own malloc arenas (up to 8 per core), and memory freed in one arena is
not reused by another thread's. The audit frees and allocates per subscription on up to a dozen
threads (fan-out, group lists, steps), so the process's RSS drifts well above Python's own heap
(measured: 14-24 MB at 13,000 sites, more at 130,000). ``mallopt(M_ARENA_MAX, 2)`` caps the arenas
for threads started afterwards; it is what ``MALLOC_ARENA_MAX=2`` does, set from code because a
Function app's environment is applied after the interpreter (and its allocator) started.

Large blocks (a page of a list or of a table query, a slice's dict of thousands of entries) are
mapped on their own and unmapped when freed: ``mallopt(M_MMAP_THRESHOLD, 256 KiB)``. Left alone,
glibc raises that threshold to the size of each large block freed (the GNU C Library manual,
"Malloc Tunable Parameters": setting it disables the dynamic adjustment), so after the first
few pages every large block came from the heap and left holes between the long-lived rows around
it, which a longer run (a larger tenant) piled up. Measured side by side, 130,000 resources,
Resource Graph, next night: glibc's free-but-kept bytes 25.9 MB without it and 9.6 MB with it, peak
RSS 166.9 MB and 156.8 MB (bench/README.md, `bench/results-100000-heavy-mmap-ab.json`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # glibc's mallopt parameter numbers
M_MMAP_THRESHOLD = -3
ARENAS = 2
#: Blocks at least this large are mapped on their own (returned to the system when freed).
MMAP_THRESHOLD = 256 * 1024


def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas and fix its mmap threshold; ``False`` (and nothing changed) on
    another C library."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(M_ARENA_MAX, arenas)) and bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    if not done:
        log.debug("mallopt(M_ARENA_MAX, %d) or mallopt(M_MMAP_THRESHOLD, %d) was refused", arenas, MMAP_THRESHOLD)
    return done
