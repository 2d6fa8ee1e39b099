"""Keep the process's memory close to what Python holds: at most a few glibc malloc arenas.

glibc gives threads their own malloc arenas (up to 8 per core), and memory freed in one arena is
not reused by another thread's. The audit frees and allocates per subscription on up to a dozen
threads (fan-out, group lists, steps), so the process's RSS drifts well above Python's own heap
(measured: 14-24 MB at 13,000 sites, more at 130,000). ``mallopt(M_ARENA_MAX, 2)`` caps the arenas
for threads started afterwards; it is what ``MALLOC_ARENA_MAX=2`` does, set from code because a
Function app's environment is applied after the interpreter (and its allocator) started.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # glibc's mallopt parameter number
ARENAS = 2


def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas; ``False`` (and nothing changed) on another C library."""
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
    done = bool(mallopt(M_ARENA_MAX, arenas))
    if not done:
        log.debug("mallopt(M_ARENA_MAX, %d) was refused", arenas)
    return done
