"""The change poll: within minutes, re-audit exactly the apps and slots whose settings changed.

Every ``AUDIT_CHANGES_SCHEDULE`` (default every 10 minutes) one tenant-wide Resource Graph query
asks the ``resourcechanges`` table which ``microsoft.web/sites`` and ``microsoft.web/sites/slots``
changed since the watermark. The change records are only a hint: each named resource is read
again through ARM (a GET of the site or slot, the truth), evaluated by the same pure core with the
same exemptions, and written as a *change run* (``Kind = changes`` in the runs table and the
RunSummary event): its result rows, its state and its NewFailure events, through the same
pipeline as the nightly run. A poll retires nothing (a resource whose GET answers its own
``ResourceNotFound`` is left to the nightly run, which lists its whole subscription); one that
cannot be read (403, any other 404) gets an ERROR row; one whose GET failed transiently is left
for the next poll.

The watermark lives in the runs table, in Resource Graph's own clock (the latest change time a
poll listed, or just before the earliest change it left for the next poll), written under the
lease; each poll looks back a margin before it (``AUDIT_CHANGES_OVERLAP_MINUTES``) because
Resource Graph is eventually consistent: a change that shows up late is still seen, and a change
seen twice is harmless (the state model never alerts twice). A poll with no change costs one
Resource Graph request and writes no run. The poll shares the nightly run's lease, and the
nightly run waits for a poll rather than skip the night (``ledger.py``). The nightly sweep stays
the ground truth for whatever the change feed misses.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from azure.core.credentials import TokenCredential

from ..azure.changefeed import CHANGES_QUERY, Change, ChangeFeed, by_subscription, fingerprint
from ..azure.exemptions import load_exemptions
from ..azure.identity import build_credential
from ..azure.inventory import ArmInventory
from ..azure.reads import ChangedResources
from ..azure.store import TableStore
from ..azure.threads import NO_CONTEXT, ThreadInit
from ..core.clock import Clock, host_clock
from ..core.config import Settings
from ..core.errors import RunInProgressError
from ..core.names import fold
from ..core.plan import tally
from ..core.schema import WATERMARK_PARTITION, WATERMARK_ROW, refused_result_row
from ..core.when import as_utc
from .ledger import POLL_DEADLINE_SECONDS, RunLedger, RunSummary
from .pipeline import Checkpoint, RunContext, SubscriptionPipeline, audit_all

log = logging.getLogger(__name__)


#: Change records re-listed by the overlap are recognised by a fingerprint kept in the watermark row:
#: 12 hex digits each, in up to this many string properties of this many (under 32K characters).
HANDLED_PROPERTIES, HANDLED_PER_PROPERTY = 12, 2400


# -- the watermark -----------------------------------------------------------------------------------
class Watermark:
    """Where the next poll starts reading, in Resource Graph's own clock (its change times).

    After a poll it is the latest change time the poll listed, when every change it listed was
    handled; while some change was left for the next poll (not read, or deferred to an unfinished
    nightly run), just before the earliest such change, so the next poll lists it again. The
    records of the changes handled in the overlap window are remembered by fingerprint, so listed
    again they are not read again, and with each change left over how many polls read it in vain.
    The row is written only while it is the one this poll read (its ETag): two polls never step
    back each other's watermark. Before any poll it starts an overlap margin before the baseline.
    """

    def __init__(self, store: TableStore, overlap: timedelta) -> None:
        self.store = store
        self.overlap = overlap
        self.row: Any | None = store.get(store.runs, WATERMARK_PARTITION, WATERMARK_ROW)

    def since(self, fallback: datetime) -> datetime:
        mark = as_utc((self.row or {}).get("ChangesThrough"))
        return (mark or fallback) - self.overlap

    def handled(self) -> set[str]:
        row = self.row or {}
        return {fp for i in range(HANDLED_PROPERTIES) for fp in str(row.get(f"Handled{i}") or "").split()}

    def attempts(self) -> dict[str, int]:
        """Folded ids a poll could not read, and how many polls tried."""
        out: dict[str, int] = {}
        for item in str((self.row or {}).get("Retrying") or "").split():
            digest, _, count = item.partition(":")
            out[digest] = int(count or 0)
        return out

    def advance(
        self, changes: Sequence[Change], left: Mapping[str, bool], retried: Mapping[str, int]
    ) -> datetime | None:
        """Write the watermark after a poll that listed ``changes`` and left ``left`` (folded ids:
        ``True`` when the deadline, not a failure, left it); returns it (``None``: unchanged)."""
        times = [c.at for c in changes if c.at is not None]
        pending = [c for c in changes if fold(c.resource_id) in left]
        previous = as_utc((self.row or {}).get("ChangesThrough"))
        if pending:
            earliest = min((c.at for c in pending if c.at is not None), default=previous)
            through = earliest - timedelta(microseconds=1) if earliest else previous
        else:
            through = max(times, default=previous)
        if through is None:
            return None
        horizon = through - self.overlap
        handled = sorted({fingerprint(c) for c in changes if c not in pending and c.at is not None and c.at > horizon})
        handled = handled[-HANDLED_PROPERTIES * HANDLED_PER_PROPERTY :]  # past the cap: re-read, harmlessly
        entity: dict[str, Any] = {
            "PartitionKey": WATERMARK_PARTITION,
            "RowKey": WATERMARK_ROW,
            "ChangesThrough": through,
        }
        for i in range(HANDLED_PROPERTIES):
            entity[f"Handled{i}"] = " ".join(handled[i * HANDLED_PER_PROPERTY : (i + 1) * HANDLED_PER_PROPERTY])
        entity["Retrying"] = " ".join(
            f"{_digest(key)}:{retried.get(_digest(key), 0) + (0 if deadline else 1)}"
            for key, deadline in sorted(left.items())
        )
        if self.store.write_if_unchanged(self.store.runs, entity, self.row):
            return through
        log.info("Change poll: another poll moved the watermark meanwhile; it stays where that poll put it")
        return None


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]


# -- the poll ----------------------------------------------------------------------------------------
@dataclass
class PollResult:
    """What one poll did (logged by the timer, asserted by tests, counted by the benchmark)."""

    since: datetime
    changes: int = 0
    resources: int = 0
    already_handled: int = 0  # change records an earlier poll handled (listed again by the overlap)
    graph_requests: int = 0
    arm_gets: int = 0
    summary: RunSummary | None = None
    watermark: datetime | None = None
    left: int = 0  # resources left for the next poll (not read this time, or the nightly run's to finish)


class ChangePoll:
    """One poll. Construct, then :meth:`execute`."""

    def __init__(
        self,
        settings: Settings,
        store: TableStore,
        feed: ChangeFeed,
        arm: ArmInventory,
        *,
        now: Callable[[], datetime] | None = None,
        clock: Clock | None = None,
        thread_init: ThreadInit = NO_CONTEXT,
        checkpoint: Checkpoint | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.feed = feed
        self.arm = arm
        self.clock = host_clock(now, clock)
        self.now = self.clock.now
        self.thread_init = thread_init
        self.checkpoint: Checkpoint = checkpoint or (lambda stage, sub: None)
        store.fallbacks[store.results.table_name] = refused_result_row

    def execute(self) -> PollResult:
        started = self.now()
        self.store.ensure_tables()
        baseline = self.store.baseline()
        if baseline is None:
            log.info("Change poll: no nightly baseline has completed yet; changes are left to the nightly run")
            return PollResult(started)
        watermark = Watermark(self.store, timedelta(minutes=self.settings.changes_overlap_minutes))
        since = watermark.since(as_utc(baseline.get("StartedAt")) or started)
        result = PollResult(since)
        changes = self.feed.since(since)
        handled = watermark.handled()
        fresh = [c for c in changes if fingerprint(c) not in handled]
        result.changes, result.already_handled = len(changes), len(changes) - len(fresh)
        result.graph_requests = self.feed.requests
        changed = by_subscription(fresh)
        result.resources = sum(len(ids) for ids in changed.values())
        if not changed:
            result.watermark = watermark.advance(changes, {}, {})
            return result
        retried = watermark.attempts()
        attempts = {key: retried.get(_digest(key), 0) for ids in changed.values() for key in map(fold, ids)}
        deadline = self.clock.monotonic() + POLL_DEADLINE_SECONDS
        inventory = ChangedResources(
            self.arm,
            changed,
            self.settings,
            self.thread_init,
            attempts=attempts,
            stop=lambda: self.clock.monotonic() > deadline,
            for_poll=True,
        )
        result.summary, left = self._run(started, deadline, inventory, changes, watermark, retried, result)
        result.arm_gets = inventory.gets
        result.left = len(left)
        return result

    def _run(
        self,
        started: datetime,
        deadline: float,
        inventory: ChangedResources,
        changes: Sequence[Change],
        watermark: Watermark,
        retried: Mapping[str, int],
        result: PollResult,
    ) -> tuple[RunSummary, dict[str, bool]]:
        """A change run: the pipeline over the changed resources only, under the shared lease; the
        watermark is written under it too, before it is released."""
        ledger = RunLedger(self.settings, self.store, self.clock, self.thread_init, kind="changes")

        def run(summary: RunSummary) -> dict[str, bool]:
            context = RunContext(
                summary,
                load_exemptions(self.store),
                {},
                {},
                deadline,
                targeted=True,
                unfinished_nightly=ledger.unfinished_nightly(started),
            )
            pipeline = self._pipeline(inventory, context)
            try:
                ids = [sub.subscription_id for sub in inventory.subscriptions()]
                totals = audit_all(pipeline, ids)
                pipeline.drain()
            finally:
                pipeline.close()
            summary.transactions, summary.partitions = pipeline.transactions, pipeline.partitions
            tally(summary, totals)
            left = {**inventory.unread, **dict.fromkeys(pipeline.deferred, True)}
            if left:
                log.info("Change poll: %d changed resources left for the next poll", len(left))
            result.watermark = watermark.advance(changes, left, retried)
            return left

        return ledger.run(started, run, what="change run")

    def _pipeline(self, inventory: ChangedResources, context: RunContext) -> SubscriptionPipeline:
        return SubscriptionPipeline(
            self.settings,
            self.store,
            inventory,
            context,
            now=self.now,
            monotonic=self.clock.monotonic,
            checkpoint=self.checkpoint,
            thread_init=self.thread_init,
        )


def poll_changes(
    settings: Settings,
    *,
    credential: TokenCredential | None = None,
    thread_init: ThreadInit = NO_CONTEXT,
    now: Callable[[], datetime] | None = None,
    clock: Clock | None = None,
    checkpoint: Checkpoint | None = None,
) -> PollResult:
    """Run one change poll with the configured identity and store. Raises
    :class:`RunInProgressError` while the nightly run (or another poll) holds the lease."""
    credential = credential or build_credential(settings.client_id)
    store = TableStore(settings, None if settings.table_connection_string else credential)
    feed = ChangeFeed(credential, settings)
    arm = ArmInventory(credential, settings, thread_init)
    try:
        return ChangePoll(
            settings, store, feed, arm, clock=host_clock(now, clock), thread_init=thread_init, checkpoint=checkpoint
        ).execute()
    finally:
        arm.close()
        feed.close()
        store.close()


__all__ = ["CHANGES_QUERY", "ChangeFeed", "ChangePoll", "PollResult", "RunInProgressError", "poll_changes"]
