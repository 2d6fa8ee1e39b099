"""The malloc-arena cap is applied on glibc and harmless elsewhere."""

from __future__ import annotations

import ctypes.util
import platform
import subprocess
import sys

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
