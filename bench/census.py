"""Compare censuses of live objects (``bench.child``'s ``--census``, ``--census-every``): which kinds
grow from one to the next.

Given the censuses of one run in order (``census-<label>.txt.001`` ... and ``.end``), a kind whose
count grows from each to the next is held for the run's length: a term that grows with the tenant.
Given the censuses of two tenant sizes at the same point of their runs, the kinds that differ are
what the larger tenant holds more of. ``python -m bench.census FILE FILE [FILE ...] [--top N]``
prints the ``N`` kinds that changed most in bytes from the first file to the last, with each
file's count and size.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_ROW = re.compile(r"^\s*([\d.]+) MiB\s+(\d+)\s+(.+)$")


@dataclass(frozen=True)
class Census:
    """One census: its header line, and (MiB, count) by kind."""

    header: str
    kinds: dict[str, tuple[float, int]]


def read(path: Path) -> Census:
    lines = path.read_text().splitlines()
    kinds: dict[str, tuple[float, int]] = {}
    for line in lines[1:]:
        match = _ROW.match(line)
        if match:
            kinds[match.group(3)] = (float(match.group(1)), int(match.group(2)))
    return Census(lines[0] if lines else "", kinds)


def changed(censuses: Sequence[Census], top: int) -> list[tuple[str, list[tuple[float, int]]]]:
    """The ``top`` kinds whose size changed most (either way) from the first census to the last; a
    kind a census does not list (below its largest kinds) counts as none there."""
    first, last = censuses[0].kinds, censuses[-1].kinds
    kinds = set().union(*(c.kinds for c in censuses))

    def change(kind: str) -> float:
        return abs(last.get(kind, (0.0, 0))[0] - first.get(kind, (0.0, 0))[0])

    ranked = sorted(kinds, key=lambda kind: (-change(kind), kind))[:top]
    return [(kind, [c.kinds.get(kind, (0.0, 0)) for c in censuses]) for kind in ranked]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.census", description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path, help="censuses, in order (at least two)")
    parser.add_argument("--top", type=int, default=25, help="kinds to print")
    args = parser.parse_args(argv)
    if len(args.files) < 2:
        parser.error("give at least two censuses")
    censuses = [read(path) for path in args.files]
    for path, census in zip(args.files, censuses, strict=True):
        print(f"{path.name}: {census.header}")
    print("count in each census (MiB in the last), kind")
    for kind, seen in changed(censuses, args.top):
        counts = " ".join(f"{count:8d}" for _, count in seen)
        print(f"{counts}  ({seen[-1][0]:.2f} MiB, {seen[-1][0] - seen[0][0]:+.2f})  {kind}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
