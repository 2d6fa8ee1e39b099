"""Why the bench reports the audit's own ``VmHWM`` and not ``wait4``'s ``ru_maxrss``.

On Linux a child's ``ru_maxrss`` starts at the peak RSS of the process that spawned it: the
high-water mark of the memory it was spawned from is kept across ``exec``. So a harness that holds
a tenant (or read every result row to compare it) reports its *own* peak as the function's.
``python -m bench.maxrss`` shows it: a child that does nothing, spawned after the parent's peak grew.
"""

from __future__ import annotations

import os
import subprocess
import sys


def peak_rss_mb() -> int:
    """This process's peak RSS (``VmHWM``), MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) // 1024
    return 0


def idle_child_maxrss_mb() -> int:
    """``ru_maxrss`` that ``wait4`` reports for a child that only starts Python and exits, MB."""
    proc = subprocess.Popen([sys.executable, "-S", "-c", "pass"])
    _, _, usage = os.wait4(proc.pid, 0)
    return usage.ru_maxrss // 1024


def grow_peak(mb: int) -> None:
    """Touch ``mb`` MB (every page), then let it go: the peak stays."""
    ballast = bytearray(mb * 2**20)
    ballast[::4096] = b"x" * len(range(0, len(ballast), 4096))
    del ballast


def main(argv: list[str] | None = None) -> int:
    sizes = [int(a) for a in (argv if argv is not None else sys.argv[1:])] or [500, 1180]
    print(f"parent peak {peak_rss_mb()} MB: an idle child's wait4 ru_maxrss {idle_child_maxrss_mb()} MB")
    for mb in sizes:
        grow_peak(mb)
        print(f"parent peak {peak_rss_mb()} MB (freed): an idle child's wait4 ru_maxrss {idle_child_maxrss_mb()} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
