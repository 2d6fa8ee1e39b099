"""One subscription, gathered and cut into slices: what the pipeline compares with its state.

:class:`Gathered` is what a subscription's listing found (its records, kept in memory up to a slice,
on disk past it, ``spill.py``), its state rows and a resumed run's earlier rows, streamed the same
way. :meth:`Gathered.slices` says into how many slices it is cut (1: it stayed in memory and is
planned whole, as a small subscription always was); :meth:`Gathered.load` reads one slice back,
compared as data: its records by key, its state by key (every copy of a row met in the same slice,
since every stream is cut by the same hash of the key), the earlier rows of its keys.

The decisions that concern the whole subscription (is it silent, which resources it no longer
lists, and asking the inventory about those once) are taken from a first pass over the slices
(:class:`Survey`), before any slice is planned: a slice is planned exactly as the whole
subscription would have been, with the same flags. Those decisions fix the subscription's state
layout, and one with at least as many state shards as slices is then cut again by shard
(:meth:`Gathered.align`): each slice writes its own shards only, so its state is sent as it is queued.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..azure.store import TableStore, merge_state, slim_state_row
from ..core.layout import state_shards
from ..core.models import Finding, SiteRecord, Status
from ..core.plan import Listed
from ..core.schema import StateCopy, finding_from_row
from .budget import Hold
from .spill import Spill, SpillDir, by_shard
from .steps import RunContext

#: A slice's answers of the inventory (confirmed records, ERROR findings) by key.
Extras = list[tuple[str, SiteRecord | Finding]]


#: Rows a stream keeps in memory before it writes them out, once a subscription's records went to disk.
STREAM_BUFFER = 256


@dataclass
class Slice:
    """A subscription's slice (or the whole of it), in memory: records, state, earlier rows."""

    listed: Listed
    prior: dict[str, Any]
    extra: list[StateCopy]
    earlier: list[dict[str, Any]]
    kept: dict[str, Any] = field(default_factory=dict)

    def unlisted_live(self) -> list[str]:
        """Keys of resources its state holds live that its records do not show."""
        return [k for k, state in self.prior.items() if k not in self.listed and not state.get("Gone")]

    def take_extras(self, extras: Extras, take: Callable[[int], None]) -> None:
        """Add its answers of the inventory (``Listing.decide``), each counted: first sighting wins, as listing."""
        first_sightings(self.listed, extras, take)

    def weight(self) -> int:
        """What it holds, as the memory budget counts it: its records and every state row it read (a
        state row weighs about as much as a record: ``python -m bench.held``)."""
        return len(self.listed) + len(self.prior) + len(self.extra)


@dataclass
class Survey:
    """What a first pass over a subscription's slices decides for all of them."""

    missing: list[str] = field(default_factory=list)  # ids its state holds live and no slice lists
    live: bool = False  # its state holds a resource that is not gone
    size: int = 0  # resources audited (the state layout's size)

    def add(self, part: Slice) -> None:
        self.live = self.live or any(not state.get("Gone") for state in part.prior.values())
        self.missing += [str(part.prior[k].get("ResourceId") or k) for k in part.unlisted_live()]
        self.size += sum(1 for v in part.listed.values() if isinstance(v, SiteRecord) or v.status is not Status.ERROR)


class Gathered:
    """A subscription's listing, state rows and earlier rows, each a :class:`~.spill.Spill`."""

    def __init__(self, directory: SpillDir, limit: int) -> None:
        self.limit = limit
        self.listed: Spill[Any] = Spill(directory, limit)
        self.prior: Spill[dict[str, Any]] = Spill(directory, limit)
        self.earlier: Spill[dict[str, Any]] = Spill(directory, limit)
        self.rest: Listed = {}  # the records listed since the last spill (first sighting wins)
        self.deleted: set[str] = set()  # keys of resources the inventory confirmed deleted
        self.gone_ids: list[str] = []
        self.records = False  # it listed a record (not only ERRORs)
        self._parts: tuple[list[Spill[Any]], list[Spill[dict[str, Any]]], list[Spill[dict[str, Any]]]] | None = None
        #: Cut by state shard (:meth:`align`): each slice's shards are its own.
        self.aligned = False

    def spill_listed(self) -> int:
        """Move the records in memory to disk; returns how many."""
        moved = len(self.rest)
        self.listed.extend(self.rest.items())
        self.listed.spill()
        self.rest = {}
        return moved

    def slices(self) -> int:
        """How many slices: 1 while everything stayed in memory; else enough for about half of
        ``limit`` each, counted as the memory budget counts them (records and state rows, see
        :meth:`Slice.weight`), so that the hash's spread keeps every slice under ``limit``."""
        if not (self.listed.spilled or self.prior.spilled or self.earlier.spilled):
            return 1
        return self._slices_for(self.listed.count + len(self.rest) + self.prior.count)

    def _slices_for(self, weight: int) -> int:
        """Slices of about half ``limit`` each for ``weight`` records and state rows (at least two)."""
        return max(2, math.ceil(2 * weight / self.limit))

    def read_state(
        self, pairs: Iterable[tuple[str, dict[str, Any]]], earlier: Iterable[dict[str, Any]], hold: Hold
    ) -> None:
        """Take the subscription's state rows and (on a resume) earlier rows, once it is listed. While
        its records are in memory, each state row is slimmed as it comes (``slim_state_row``) and
        counted by ``hold`` as it is kept (a unit of its own, as a record is: it may wait at the
        cap), records and rows together up to a slice; past it, the rows go to disk and are given
        back. Once the records went to disk, so do the rows, a few at a time (which slice they
        belong to is decided by their key, and their records are not at hand to slim them by).

        Counted since a held resource's prior state row about doubles what it weighs: a cap on
        resources alone held 25,000 of them at 628 bytes each on the first night and at up to
        1,285 on the next, the share that waited with its state deciding the peak (bench/README.md,
        "State rows counted")."""
        present = None if self.listed.spilled else self.rest
        if present is None:
            self.prior.limit = self.earlier.limit = STREAM_BUFFER
        else:  # records and rows together stay under a slice; past it, the subscription is cut
            self.prior.limit = max(1, self.limit - len(present))
        counted = 0
        for key, raw in pairs:
            if present is None:
                self.prior.add(key, raw)
                continue
            in_memory = not self.prior.spilled
            if in_memory:
                hold.take()
                counted += 1
            self.prior.add(key, slim_state_row(key, raw, present))
            if in_memory and self.prior.spilled:  # this row took them to disk; every row after goes there
                self.prior.limit = STREAM_BUFFER
                hold.give_back(counted)
        self.earlier.extend((str(row["RowKey"]), row) for row in earlier)

    def whole(self) -> Slice:
        """The subscription as one slice (it stayed in memory); the streams let go of their rows."""
        prior, extra = merge_state(self.prior, slimmed=True)
        part = Slice(self.rest, prior, extra, [row for _, row in self.earlier])
        self.prior.clear()
        self.earlier.clear()
        return part

    def cut(self, slices: int) -> None:
        """Cut every stream into ``slices`` by the hash of the key (records in memory go to disk)."""
        self.spill_listed()
        self._parts = (self.listed.split(slices), self.prior.split(slices), self.earlier.split(slices))

    def align(self, size: int, extras: list[Extras], settle: Callable[[Listed], None], hold: Hold) -> list[Extras]:
        """Cut the subscription again, by the state shards of its layout (``size``, see
        ``core/layout.py``): each slice gets shards whole (:func:`~.spill.by_shard`), so no two
        slices write to one shard, and each slice's state rows are sent, the partial rest of its
        shards too, as soon as it is queued. Cut by the hash alone, every slice wrote to every one
        of the subscription's shards, and its rows waited, held, in partial batches until the
        slices after it filled them: the larger the subscription, the more shards, the fewer rows
        each slice gave a shard and the more slices waited (up to the whole cap).

        The first cut is read a slice at a time, counted as :meth:`load` counts (``hold``), and
        given back once written out. Its records are settled there, where each slot is with its
        site (``settle``: their owners), with the inventory's answers for its keys (``extras``,
        first sighting wins); state and earlier rows are copied as they are. Returns the extras
        each slice still gets, one list per slice: none once aligned.

        The first cut's slices were counted before the records were settled, ARM's repeats among
        them (a site its group's list names again: about 1.8 listings per resource); cut by shard,
        they are counted as the slices will hold them, ``size`` resources and the state rows, as
        few as keep each slice at about half ``limit`` (:meth:`slices`), never more than the first
        cut. A subscription with fewer shards than that (its state holds far more than it lists,
        or it has no shards) stays cut by the hash."""
        assert self._parts is not None, "cut() first"
        first = len(self._parts[0])
        rows = sum(part.count for part in self._parts[1])
        count = min(first, self._slices_for(size + rows))
        shards = state_shards(size)
        if shards < count:
            return extras
        listed_cut = self.listed.parts(count)

        def place(key: str, value: Any) -> None:
            listed_cut[by_shard(key, shards, count)].add(key, value)

        for index, part in enumerate(self._parts[0]):  # records, a slice at a time, as load() reads them
            _settled(part, extras[index], settle, hold.take, place)
            part.discard()
            hold.give_back(hold.count)
        for part in listed_cut:
            part.spill()
        prior_cut, earlier_cut = (self._recut(parts, shards, count) for parts in self._parts[1:])
        self._parts = (listed_cut, prior_cut, earlier_cut)
        self.aligned = True
        return [[] for _ in range(count)]

    @staticmethod
    def _recut(parts: list[Spill[dict[str, Any]]], shards: int, count: int) -> list[Spill[dict[str, Any]]]:
        """A stream's slices cut again by shard into ``count`` (one stream at a time: the cut's buffers are bounded)."""
        cut = parts[0].parts(count)
        for part in parts:
            for key, row in part:
                cut[by_shard(key, shards, count)].add(key, row)
            part.discard()
        for each in cut:
            each.spill()
        return cut

    def load(self, index: int, *, last: bool = False, take: Callable[[int], None] = lambda count: None) -> Slice:
        """Slice ``index`` of a cut subscription, read back from disk (``last``: for the last time,
        its files are removed), its :meth:`Slice.weight` given to ``take`` (the memory budget's, which
        may wait at the cap) as it is read: each record as it adds a resource, and each state row,
        before the next is read. Read whole and counted after, a slice waiting for room (a large
        subscription's slices are junior to every listing) held thousands of resources the cap did
        not count."""
        assert self._parts is not None, "cut() first"
        listed_part, prior_part, earlier_part = (self._parts[0][index], self._parts[1][index], self._parts[2][index])
        listed = first_sightings({}, listed_part, take)
        prior, extra = merge_state(counted(prior_part, take), present=listed)
        part = Slice(listed, prior, extra, [row for _, row in earlier_part])
        if last:
            for stream in (listed_part, prior_part, earlier_part):
                stream.discard()
        return part


def counted(pairs: Iterable[tuple[str, Any]], take: Callable[[int], None]) -> Iterator[tuple[str, Any]]:
    """``pairs``, each counted by ``take`` before it is handed on (a state row as it is read)."""
    for pair in pairs:
        take(1)
        yield pair


def first_sightings(listed: Listed, pairs: Iterable[tuple[str, Any]], take: Callable[[int], None]) -> Listed:
    """Add ``pairs`` to ``listed`` where their key is not there yet (the first sighting wins, as when
    listing), each added one counted by ``take`` before the next is read; returns ``listed``."""
    for key, value in pairs:
        if key not in listed:
            take(1)
            listed[key] = value
    return listed


def _settled(
    part: Iterable[tuple[str, Any]],
    extras: Extras,
    settle: Callable[[Listed], None],
    take: Callable[[int], None],
    out: Callable[[str, Any], None],
) -> None:
    """A slice's records, first sighting wins, with the inventory's answers for its keys, each
    counted (``take``) as it is read, settled whole (``settle``) and handed to ``out``; nothing of
    them is kept once it returns."""
    listed = first_sightings({}, itertools.chain(part, extras), take)
    settle(listed)
    for key, value in listed.items():
        out(key, value)


def kept_rows(
    run_id: str, prior: Mapping[str, Any], findings: Listed, earlier: list[dict[str, Any]]
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """A resumed run's earlier rows it keeps (of resources whose state that attempt advanced, see
    :func:`earlier_attempt`) by key, and the ``(PartitionKey, RowKey)`` of the others."""
    committed = {
        key
        for key, state in prior.items()
        if state.get("LastRunId") == run_id and (key in findings or state.get("AlertRunId") == run_id)
    }
    kept = {str(row["RowKey"]): row for row in earlier if str(row["RowKey"]) in committed}
    stale = [(str(row["PartitionKey"]), str(row["RowKey"])) for row in earlier if str(row["RowKey"]) not in kept]
    return kept, stale


def replay(findings: Listed, kept: Mapping[str, Any]) -> None:
    """The kept rows' decisions stand: their findings are replayed from them."""
    findings.update((key, finding_from_row(row)) for key, row in kept.items())


def earlier_attempt(
    store: TableStore, run: RunContext, part: Slice, *, replayed: bool, delete: bool = True
) -> dict[str, Any]:
    """A resumed run keeps the rows its earlier attempt stored for the resources whose state that
    attempt advanced (their decisions stand: an alert may already name this run, sent by it or
    owed) and deletes the others, which it writes again; returns the kept rows by key. Those
    decisions stand as that attempt saw each resource: they are replayed from the kept rows into
    the slice's records (what the run reads now of those resources is not used) when the
    subscription listed a record (``replayed``; else it is silence, checked as such). A kept
    resource that is no longer listed keeps its row only if an alert names this run for it.
    ``delete=False``: the slice is read again after its rows were tidied (the second pass)."""
    kept, stale = kept_rows(run.summary.run_id, part.prior, part.listed, part.earlier)
    if stale and delete:
        store.delete_keys(store.results, stale)
    if replayed:
        replay(part.listed, kept)
    return kept
