"""Disk-backed spools: how the table, HTML and script formats put their summary *before* a list of
100,000 rows without holding the rows in memory (the list is spooled while the rows are counted,
then replayed worst status first).
"""

from __future__ import annotations

import contextlib
import tempfile
from array import array
from collections import Counter
from collections.abc import Callable, Iterable
from typing import IO

SPOOL_BYTES = 2 * 1024 * 1024
#: Order of the resource list: what is worst comes first.
LIST_ORDER: tuple[str, ...] = ("FAIL", "ERROR", "WARN", "EXEMPT", "PASS")


def new_spool() -> tempfile.SpooledTemporaryFile[str]:
    """A text buffer that moves to a temporary file beyond :data:`SPOOL_BYTES`."""
    return tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES, mode="w+", encoding="utf-8", newline="")


def copy(source: IO[str], out: IO[str]) -> None:
    """Everything written to ``source``, from its start, to ``out`` in chunks."""
    source.seek(0)
    while chunk := source.read(64 * 1024):
        out.write(chunk)


class ListSpool:
    """Rendered list entries held per status on disk-backed spools, replayed worst status first.

    Rows arrive in table order (subscription, then resource); the reader wants every FAIL before
    the first WARN. One spool per status keeps that ordering without holding the rows in memory.
    With ``limit``, at most that many entries are replayed (worst first), and entries must be one
    line each; :attr:`count` still counts every entry.
    """

    def __init__(self, limit: int | None = None) -> None:
        self._stack = contextlib.ExitStack()
        self._spools: dict[str, IO[str]] = {}
        self._kept: Counter[str] = Counter()
        self.limit = limit
        self.count = 0

    def __enter__(self) -> ListSpool:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def write(self, status: str, rendered: str) -> None:
        self.count += 1
        if self.limit is not None and self._kept[status] >= self.limit:
            return  # never replayed: no need to keep it
        spool = self._spools.get(status)
        if spool is None:
            spool = self._spools[status] = self._stack.enter_context(new_spool())
        spool.write(rendered)
        self._kept[status] += 1

    @property
    def shown(self) -> int:
        """How many entries :meth:`copy_to` writes."""
        kept = sum(self._kept.values())
        return kept if self.limit is None else min(kept, self.limit)

    def copy_to(self, out: IO[str]) -> None:
        room = self.shown
        for status in sorted(self._spools, key=list_rank):
            spool = self._spools[status]
            if self._kept[status] <= room:
                copy(spool, out)
                room -= self._kept[status]
                continue
            spool.seek(0)
            for _ in range(room):
                out.write(spool.readline())
            return


def list_rank(status: str) -> int:
    """Where ``status`` comes in :data:`LIST_ORDER` (unknown ones last)."""
    return LIST_ORDER.index(status) if status in LIST_ORDER else len(LIST_ORDER)


class RankedSpool:
    """Entries (one line each) on one disk-backed spool, replayed in an order decided only at the end:
    by bucket (new failures, FAIL, ERROR, WARN, ...), within a bucket by group in the order
    :meth:`copy_to` is given (worst subscription first, known only once every row was counted), and
    within a group as they came. Memory: one 8-byte offset per entry, whatever the entries hold."""

    def __init__(self, limit: int | None = None) -> None:
        self._spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES, mode="w+b")  # noqa: SIM115 - closed by __exit__
        self._offsets: dict[int, dict[str, array[int]]] = {}
        self._end = 0
        self.limit = limit
        self.count = 0

    def __enter__(self) -> RankedSpool:
        return self

    def __exit__(self, *exc: object) -> None:
        self._spool.close()

    def write(self, bucket: int, group: str, line: str) -> None:
        """Keep one entry (a line ending in ``\\n``) in ``bucket`` and ``group``."""
        data = line.encode("utf-8")
        self._spool.write(data)
        self._offsets.setdefault(bucket, {}).setdefault(group, array("q")).append(self._end)
        self._end += len(data)
        self.count += 1

    @property
    def shown(self) -> int:
        """How many entries :meth:`copy_to` writes."""
        return self.count if self.limit is None else min(self.count, self.limit)

    def copy_to(self, out: IO[str], group_order: Callable[[Iterable[str]], list[str]]) -> None:
        """The first :attr:`shown` entries, bucket by bucket, groups in ``group_order``'s order."""
        room = self.shown
        self._spool.flush()
        for bucket in sorted(self._offsets):
            groups = self._offsets[bucket]
            for group in group_order(groups):
                for offset in groups[group]:
                    if room <= 0:
                        return
                    self._spool.seek(offset)
                    out.write(self._spool.readline().decode("utf-8"))
                    room -= 1
