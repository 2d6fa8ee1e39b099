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
import functools
import logging
import threading
import time
from typing import Any

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # glibc's mallopt parameter number
ARENAS = 2


@functools.cache
def _libc() -> Any:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas; ``False`` (and nothing changed) on another C library."""
    try:
        mallopt = _libc().mallopt
    except AttributeError:  # no C library found, or not glibc
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(M_ARENA_MAX, arenas))
    if not done:
        log.debug("mallopt(M_ARENA_MAX, %d) was refused", arenas)
    return done


#: At most one trim in this many seconds (one walks glibc's free lists: about a millisecond).
TRIM_EVERY = 2.0
_trimmed = [0.0]
_trim_lock = threading.Lock()


def release_free_memory() -> bool:
    """Give the pages glibc keeps free inside its heaps back to the system (``malloc_trim(0)``),
    at most every :data:`TRIM_EVERY` seconds; ``False`` when not done (too soon, not glibc).

    A next night reads every state row of the tenant: dicts of a dozen fields, whose tables glibc
    allocates (past pymalloc's 512 bytes), freed a slice later by other threads in other order. glibc
    keeps what is freed for reuse but returns only the top of a heap, so its free pages pile up as the
    run goes on, with the tenant, not with what the run holds (measured: bench/README.md). Called as
    each subscription is done."""
    now = time.monotonic()
    with _trim_lock:
        if now - _trimmed[0] < TRIM_EVERY:
            return False
        _trimmed[0] = now
    try:
        trim = _libc().malloc_trim
    except AttributeError:
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    trim(0)
    return True
