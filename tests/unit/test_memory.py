"""The malloc-arena cap and the fixed mmap threshold are applied on glibc and harmless elsewhere."""

from __future__ import annotations

import ctypes.util
import platform
import subprocess
import sys

import pytest

from shared.run.memory import limit_malloc_arenas


def test_applied_on_glibc() -> None:
    on_glibc = platform.libc_ver()[0] == "glibc" and bool(ctypes.util.find_library("c"))
    assert limit_malloc_arenas() is on_glibc


def test_the_function_app_applies_it_at_import() -> None:
    code = (
        "import shared.run.memory as m; calls = []; real = m.limit_malloc_arenas\n"
        "m.limit_malloc_arenas = lambda *a: calls.append(a) or real(*a)\n"
        "import function_app; print(len(calls))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip().splitlines()[-1] == "1"


#: In a fresh interpreter: free a 4 MiB block (glibc's dynamic threshold would rise to 4 MiB), then
#: allocate 1 MiB and say whether glibc mapped it on its own (``mallinfo2().hblks`` counts those).
_MAPPED_AFTER_A_LARGE_FREE = """
import ctypes, ctypes.util, sys
fixed = sys.argv[1] == "fixed"
if fixed:
    from shared.run.memory import limit_malloc_arenas
    assert limit_malloc_arenas()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc.mallinfo2.restype = Info
libc.free(libc.malloc(4 << 20))
before = libc.mallinfo2().hblks
block = libc.malloc(1 << 20)
print(libc.mallinfo2().hblks - before)
libc.free(block)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_large_blocks_stay_mapped_on_their_own_after_a_larger_one_was_freed() -> None:
    """Without the fixed threshold, glibc would serve the 1 MiB block from its heap (the 4 MiB one
    freed before raised the threshold); with it, the block is mapped and unmapped on its own."""

    def mapped(mode: str) -> int:
        run = subprocess.run(
            [sys.executable, "-c", _MAPPED_AFTER_A_LARGE_FREE, mode], capture_output=True, text=True, timeout=60
        )
        assert run.returncode == 0, run.stderr
        return int(run.stdout.strip())

    assert mapped("dynamic") == 0, "glibc's own dynamic threshold: the block came from the heap"
    assert mapped("fixed") == 1
