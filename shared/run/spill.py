"""What one subscription lists and what its state holds, in memory up to a slice, on disk past it.

A subscription is compared with its prior state by key. Holding both whole makes memory grow with
the tenant's largest subscription (72,504 resources in the bench's 260k tenant): the one term a
cap on the *run* cannot bound. So each stream of a subscription (its listing, its state rows, a
resumed run's earlier rows) is a :class:`Spill`: kept in memory up to ``limit`` items, written to
a temporary file past it. A subscription whose streams all stayed in memory is planned whole, as
before; one that spilled is cut into ``slices`` by a hash of the key (:func:`slice_of`), every
stream by the same hash, so a slice holds *every* item of its keys from every stream: the listing,
the state rows (every copy of one), the earlier rows. Each slice is then compared and planned on its
own, in memory, and no slice holds much more than ``limit`` resources.

A hash, not a key range: a key range would need the listing sorted the way Table Storage sorts
``RowKey`` (the service's order, not Python's, for keys with non-ASCII letters), and a row an older
version stored under another key (``lower()``) would fall in another range than its resource.
The files are pickles of our own records and rows, written and read by this process only, in a
private temporary directory removed when the subscription is done.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import shutil
import sys
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

from ..core.keys import site_key
from ..core.layout import state_shard
from ..core.models import SiteRecord

T = TypeVar("T")


def slice_of(key: str, slices: int) -> int:
    """The slice a key belongs to (stable across processes, unlike :func:`hash`); a slot's is its
    site's (:func:`~shared.core.keys.site_key`), so a slice holds each site with its slots."""
    if slices <= 1:
        return 0
    return zlib.crc32(site_key(key).encode("utf-8", "surrogatepass")) % slices


def by_shard(key: str, shards: int, slices: int) -> int:
    """The slice a key belongs to once a subscription is cut by its state shards
    (:meth:`~shared.run.slices.Gathered.align`): slice ``i`` gets shards ``[i·shards/slices,
    (i+1)·shards/slices)`` whole (``shards`` at least ``slices``: none is left without one)."""
    return state_shard(key, shards) * slices // shards


class SpillError(Exception):
    """The temporary disk did not take a subscription's streams (full, missing or not writable)."""


def _disk_error(exc: OSError) -> SpillError:
    return SpillError(
        f"the audit's temporary files could not be written in {tempfile.gettempdir()} ({exc.strerror or exc}): a "
        "subscription larger than a slice is compared with its state from there, up to about 3 KB of disk per "
        "resource; give the host more temporary disk, or set TMPDIR to a directory with room"
    )


#: Where a process's spill directories are made: ``<prefix><pid>-<random>`` under the temp directory.
PREFIX = "clientcert-audit-"


class SpillDir:
    """A private temporary directory for one subscription's spilled streams, removed on close.

    A process that is killed (the host's timeout, the OOM killer) cannot remove its directories: the
    next one to make a directory removes those whose process is gone (:func:`sweep`), so a host's
    disk does not fill up night after night."""

    def __init__(self) -> None:
        self._path: Path | None = None
        self._files = 0

    def new_file(self) -> Path:
        """The path of a new, empty file in the directory (``mkdtemp``: readable by this user only)."""
        try:
            if self._path is None:
                sweep()
                self._path = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))
            self._files += 1
            path = self._path / f"{self._files}.pickle"
            path.write_bytes(b"")
        except OSError as exc:
            raise _disk_error(exc) from exc
        return path

    def close(self) -> None:
        if self._path is not None:
            shutil.rmtree(self._path, ignore_errors=True)
            self._path = None


def sweep(root: Path | None = None) -> int:
    """Remove the spill directories of processes that no longer run; returns how many."""
    removed = 0
    for path in (root or Path(tempfile.gettempdir())).glob(f"{PREFIX}*-*"):
        pid = path.name[len(PREFIX) :].split("-", 1)[0]
        if not pid.isdigit() or _running(int(pid)):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed += 1
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: running, and not ours to clean
        return True
    return True


class Spill(Generic[T]):
    """``(key, item)`` pairs in arrival order: in memory up to ``limit`` of them, then on disk."""

    def __init__(self, directory: SpillDir, limit: int) -> None:
        self._dir = directory
        self.limit = limit
        self._memory: list[tuple[str, T]] = []
        self._path: Path | None = None
        self.count = 0

    @property
    def spilled(self) -> bool:
        return self._path is not None

    def add(self, key: str, item: T) -> None:
        """Add one pair (to disk with the others in memory once they reach ``limit``)."""
        self._memory.append((key, item))
        self.count += 1
        if len(self._memory) >= self.limit:
            self.spill()

    def extend(self, pairs: Iterable[tuple[str, T]]) -> None:
        for key, item in pairs:
            self.add(key, item)

    def spill(self) -> None:
        """Write what memory holds to the file."""
        if self._path is None:
            self._path = self._dir.new_file()
        try:
            with self._path.open("ab") as file:  # no file stays open between writes
                pickler = _Pickler(file, protocol=pickle.HIGHEST_PROTOCOL)
                for pair in self._memory:  # one pickle each, read back one by one (each with its own memo)
                    pickler.dump(pair)
                    pickler.clear_memo()
        except OSError as exc:  # a pair half written is never read: the subscription is not audited
            raise _disk_error(exc) from exc
        self._memory = []

    def __iter__(self) -> Iterator[tuple[str, T]]:
        """The pairs in arrival order (the file's first, then memory's); can be read more than once."""
        if self._path is not None:
            with self._path.open("rb") as reader:
                while True:
                    try:
                        # Our own records and rows, written by this process to its private directory above.
                        yield pickle.load(reader)  # noqa: S301
                    except EOFError:
                        break
        yield from self._memory

    def clear(self) -> None:
        """Let go of the pairs in memory (those on disk stay readable)."""
        self._memory = []

    def discard(self) -> None:
        """Let go of every pair, on disk too (the stream is read for the last time)."""
        self._memory = []
        if self._path is not None:
            self._path.unlink(missing_ok=True)
            self._path = None

    def split(self, slices: int) -> list[Spill[T]]:
        """The pairs cut into ``slices`` streams by :func:`slice_of` their key (each on disk)."""
        parts: list[Spill[T]] = self.parts(slices)
        for key, item in self:
            parts[slice_of(key, slices)].add(key, item)
        for part in parts:
            part.spill()
        self.discard()  # the disk holds each pair once
        return parts

    def parts(self, slices: int) -> list[Spill[T]]:
        """``slices`` empty streams beside this one, to cut pairs into (each written as it fills)."""
        each = max(1, min(_PART_BUFFER, _CUT_BUFFER // slices))  # bounded, however many slices
        return [Spill(self._dir, each) for _ in range(slices)]


#: The fields of a record that many records share (``sites.site_record`` keeps each value once):
#: kept once again when a record is read back from disk, not once per record.
_SHARED_FIELDS = frozenset(
    {
        "subscription_id",
        "resource_group",
        "slot",
        "kind",
        "state",
        "location",
        "client_cert_mode",
        "public_network_access",
    }
)
_RECORD_FIELDS = tuple(f.name for f in dataclasses.fields(SiteRecord))


def _record(*values: Any) -> SiteRecord:
    """A record read back from disk, its shared values interned as when it was listed."""
    fields: dict[str, Any] = {
        name: sys.intern(v) if name in _SHARED_FIELDS and type(v) is str else v
        for name, v in zip(_RECORD_FIELDS, values, strict=True)
    }
    return SiteRecord(**fields)


class _Pickler(pickle.Pickler):
    """Records are written as their values and rebuilt by :func:`_record`."""

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is SiteRecord:
            return _record, tuple(getattr(obj, name) for name in _RECORD_FIELDS)
        return NotImplemented


#: Pairs each slice's stream buffers while a stream is cut into slices (written as it fills) ...
_PART_BUFFER = 64
#: ... and all of them together: a fixed buffer per slice alone would grow with the slices, so with
#: the subscription's size; past 32 slices (80,000 resources), each slice's share is smaller.
_CUT_BUFFER = 2_048
