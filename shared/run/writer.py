"""Packing rows of many subscriptions into full Table transactions, with a durability signal.

A transaction carries at most 100 entities of one partition. Written one subscription at a time,
every subscription ends with a partial transaction, and most subscriptions are small. The
:class:`PackedWriter` lets the rows of many subscriptions ("owners") share transactions, and tells
each owner, exactly once, when *all* of its rows are stored. The audit builds its ordering on that
signal: a subscription's state advances only after its result rows are durable, and its events go
out only after its state is, so a crash at any point is resumable without double alerts.

Thread-safe: audit workers add rows concurrently; whichever thread fills a batch sends it (so the
number of concurrent writers is the audit's concurrency, with natural back-pressure), and the owner
callbacks run in the thread that completed the owner's last batch, outside the lock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..core import layout
from ..core.layout import BATCH_SIZE
from ..core.schema import DeferredRow

log = logging.getLogger(__name__)

Row = dict[str, Any]
Send = Callable[[list[Row]], int]  # sends one batch (one partition), returns transactions used
#: What an owner queues: a row, or a row rendered when its batch is sent (its partition known now).
Queued = Row | DeferredRow


@dataclass(slots=True)
class _Owner:
    pending: int = 0
    sealed: bool = False
    failed: bool = False
    on_durable: Callable[[], None] | None = None


class PackedWriter:
    """Buffers rows per partition, sends each batch of 100 as it fills, flushes the rest on demand.

    With ``sequential`` set, rows get their PartitionKey here: ``sequential(i)`` for the *i*-th
    group of ``partition_rows`` rows, in arrival order (the results layout). Otherwise every row
    carries its own PartitionKey (the state layout).
    """

    def __init__(
        self,
        send: Send,
        *,
        sequential: Callable[[int], str] | None = None,
        partition_rows: int | None = None,
        name: str = "table",
    ) -> None:
        self._send_batch = send
        self._sequential = sequential
        self._partition_rows = partition_rows or layout.PARTITION_ROWS  # read late: tests shrink it
        self.name = name
        self._lock = threading.Lock()
        self._buffers: dict[str, list[tuple[str, Queued]]] = {}
        self._owners: dict[str, _Owner] = {}  # owners not signalled yet
        self._added: set[str] = set()  # every owner ever added: each is signalled at most once
        self._index = 0
        self._in_partition = 0
        self.transactions = 0
        self.rows = 0
        self.partitions: set[str] = set()
        self.error: BaseException | None = None
        self._sending = 0  # batches being sent now

    # -- adding ---------------------------------------------------------------------------
    def add(
        self,
        owner: str,
        rows: Iterable[Queued],
        on_durable: Callable[[], None],
        *,
        flush_own: bool = False,
    ) -> None:
        """Queue all of ``owner``'s rows; ``on_durable`` runs once every one of them is stored.

        ``flush_own`` sends the partial batches of the partitions these rows went to right away:
        for partitions no other owner writes to (a large subscription's own shards), waiting
        would only delay the owner. An owner is added once per writer.
        """
        with self._lock:
            if owner in self._added:
                raise ValueError(f"{self.name}: rows of {owner} were already added")
            self._added.add(owner)
            self._owners[owner] = _Owner()
        touched: set[str] = set()
        for row in rows:
            partition, full = self._append(owner, row)
            touched.add(partition)
            if full:
                self._send(full)
        with self._lock:
            state = self._owners[owner]
            state.sealed = True
            state.on_durable = on_durable
            ready = self._take_ready(owner, state)
        if flush_own:
            self.flush(touched)
        if ready:
            ready()

    def _append(self, owner: str, row: Queued) -> tuple[str, list[tuple[str, Queued]] | None]:
        """Queue one row; its partition, and the batch it filled (to send), if it did."""
        with self._lock:
            if isinstance(row, DeferredRow):
                if self._sequential is not None:  # its partition is the writer's to choose: render it first
                    raise TypeError(f"{self.name}: a deferred row in a sequentially partitioned writer")
                key = row.partition
            else:
                if self._sequential is not None:
                    if self._in_partition == self._partition_rows:
                        self._index += 1
                        self._in_partition = 0
                    row["PartitionKey"] = self._sequential(self._index)
                    self._in_partition += 1
                key = str(row["PartitionKey"])
            buffer = self._buffers.setdefault(key, [])
            buffer.append((owner, row))
            self._owners[owner].pending += 1
            if len(buffer) == BATCH_SIZE:
                return key, self._buffers.pop(key)
            return key, None

    # -- sending --------------------------------------------------------------------------
    def flush(self, partitions: Iterable[str] | None = None) -> None:
        """Send the partial batches (of ``partitions``, or all), e.g. at the end of a run."""
        with self._lock:
            keys = list(self._buffers) if partitions is None else [k for k in partitions if k in self._buffers]
            batches = [self._buffers.pop(key) for key in keys]
        for batch in batches:
            self._send(batch)

    @property
    def buffered(self) -> int:
        with self._lock:
            return sum(len(b) for b in self._buffers.values())

    @property
    def sending(self) -> bool:
        """A batch is being sent now: when it is stored, its owners may be let go."""
        with self._lock:
            return self._sending > 0

    @property
    def waiting_owners(self) -> int:
        """Owners whose rows are not all stored yet (after a full flush: those whose batch failed)."""
        with self._lock:
            return len(self._owners)

    def _send(self, batch: list[tuple[str, Queued]]) -> None:
        with self._lock:
            self._sending += 1
        try:
            self._send_counted(batch)
        finally:  # after its owners' next steps were submitted: in flight until then (:attr:`sending`)
            with self._lock:
                self._sending -= 1

    def _send_counted(self, batch: list[tuple[str, Queued]]) -> None:
        try:
            rows: list[Row] = [row.render(row.key) if isinstance(row, DeferredRow) else row for _, row in batch]
            used = self._send_batch(rows)
        except BaseException as exc:
            with self._lock:
                self.error = self.error or exc
                for owner, _ in batch:
                    if owner in self._owners:
                        self._owners[owner].failed = True  # never signalled durable
            raise
        callbacks: list[Callable[[], None]] = []
        with self._lock:
            self.transactions += used
            self.rows += len(rows)
            self.partitions.add(str(rows[0]["PartitionKey"]))
            for owner, _ in batch:
                state = self._owners.get(owner)
                if state is None:
                    continue
                state.pending -= 1
                ready = self._take_ready(owner, state)
                if ready:
                    callbacks.append(ready)
        for callback in callbacks:
            callback()

    def _take_ready(self, owner: str, state: _Owner) -> Callable[[], None] | None:
        """The owner's callback if all its rows are stored (caller holds the lock); fires once."""
        if state.sealed and state.pending == 0 and not state.failed and state.on_durable is not None:
            del self._owners[owner]
            return state.on_durable
        return None
