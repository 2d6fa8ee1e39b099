"""The subscription pipeline: list a subscription, evaluate it, plan its rows, and store them in
order (result rows, then its state, then its alerts).

Each subscription's *plan* is pure data, computed up front (its transitions, its state partitions,
what is gone); the writers only write what the plan renders. The order is kept with explicit
continuations: when the results writer reports a subscription's rows durable, the next step of
*that* subscription (advancing its state) is submitted as a task of its own, and likewise its
alert step once its state is durable. A step that fails is that subscription's failure, never
another's, and every task carries the invocation context (``threads.py``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import replace
from datetime import datetime
from typing import Any

from ..azure.store import TableStore
from ..azure.threads import NO_CONTEXT, ThreadInit, executor
from ..core.config import Settings
from ..core.evaluate import error_finding
from ..core.keys import lookup_keys
from ..core.layout import narrowed_state_filters
from ..core.models import InventoryError, SiteRecord
from ..core.names import fold
from ..core.owners import set_owners
from ..core.plan import (
    Findings,
    Listed,
    SubscriptionPlan,
    SubscriptionResult,
    Totals,
    plan_subscription,
    targeted,
)
from ..core.schema import SOURCE_GET, SOURCE_LIST, StateCopy
from .budget import Hold
from .listing import Inventory as Inventory
from .listing import Listing, reread_fresher
from .slices import Extras, Gathered, Slice, Survey, earlier_attempt
from .spill import SpillDir, SpillError
from .steps import ATTEMPT_PARTITIONS as ATTEMPT_PARTITIONS
from .steps import Checkpoint as Checkpoint
from .steps import RunContext as RunContext
from .steps import Steps, _Tracked

log = logging.getLogger(__name__)

#: Records and state rows the run holds in memory at once (resources listed whose state is not stored
#: yet: compact records of subscriptions being listed, planned, or waiting for their shared partitions
#: to fill, and on the next night each one's prior state row, a unit of its own), a hard cap: past it,
#: a subscription being listed waits (``budget.py``; the one that started holding first never does,
#: so the run holds at most this plus a slice). Each about 0.5 to 0.8 KB (``python -m bench.held``).
MAX_HELD_RESOURCES = 20_000
#: Records and state rows one subscription holds in memory while it is listed and compared with its
#: state: past it, its listing and state rows go to disk and it is compared and planned in slices of
#: about half this many (``slices.py``), so that no subscription, however large, holds much more.
SLICE_RESOURCES = 5_000
#: RowKey of the tenant's ERROR row (its ResourceId is ``/``, the tenant root scope).
TENANT_ROW_KEY = "~tenant"


# -- the pipeline (I/O) ----------------------------------------------------------------------------


class SubscriptionPipeline:
    """Audits subscriptions of one run and stores their rows, state and alerts, in that order."""

    def __init__(
        self,
        settings: Settings,
        store: TableStore,
        inventory: Inventory,
        run: RunContext,
        *,
        now: Callable[[], datetime],
        checkpoint: Checkpoint,
        monotonic: Callable[[], float] = time.monotonic,
        thread_init: ThreadInit = NO_CONTEXT,
    ) -> None:
        self.settings = settings
        self.store = store
        self.inventory = inventory
        self.run = run
        self.now = now
        self.checkpoint, self.thread_init = checkpoint, thread_init
        self.steps = Steps(
            settings, store, run, checkpoint=checkpoint, thread_init=thread_init, held=MAX_HELD_RESOURCES
        )
        self.budget = self.steps.budget
        self.listing = Listing(settings, store, inventory, run, monotonic=monotonic)
        self._lock = threading.Lock()
        #: Folded ids of changed resources a change run left to an unfinished nightly run's resume.
        self.deferred: set[str] = set()

    # -- one subscription -----------------------------------------------------------------------
    def audit(self, subscription_id: str) -> SubscriptionResult:
        """Inventory one subscription (compact records, within the run's memory cap, on disk past a
        slice), compare it with its prior state slice by slice (``slices.py``), plan each slice, and
        queue its result rows; its state and alerts follow as their own tasks when the writers
        report the previous step durable."""
        result = SubscriptionResult(subscription_id)
        audited_at = self.now()
        hold = self.budget.admit(subscription_id)
        where = SpillDir()
        try:
            if self.run.targeted:
                self._audit_targeted(subscription_id, result, audited_at, hold)
            else:
                self._audit_listed(subscription_id, result, audited_at, hold, where)
        except BaseException:
            hold.release()
            raise
        finally:
            where.close()
        return result

    def _audit_targeted(
        self, subscription_id: str, result: SubscriptionResult, audited_at: datetime, hold: Hold
    ) -> None:
        """A change run: only what it re-read, and only that state (few: never sliced)."""
        deleted: set[str] = set()
        gone_ids: list[str] = []
        listed: Listed = {}
        for item in self.listing.scan(subscription_id):
            self.listing.take(item, subscription_id, result, listed, deleted, gone_ids, hold)
        prior, extra, deleted = self._targeted_state(subscription_id, listed, deleted, gone_ids)
        part = Slice(listed, prior, extra, [])
        hold.take(part.weight() - len(listed))  # its state rows (its records were taken as listed)
        self._queue(subscription_id, result, hold, self._plan(subscription_id, result, audited_at, part, deleted, hold))

    def _audit_listed(
        self, subscription_id: str, result: SubscriptionResult, audited_at: datetime, hold: Hold, where: SpillDir
    ) -> None:
        """A nightly run's subscription: gathered, surveyed, then planned slice by slice."""
        try:
            gathered = self.listing.gather(subscription_id, result, hold, where, SLICE_RESOURCES)
            count = gathered.slices()
            if count > 1:
                gathered.cut(count)
                size, extras = self._first_pass(subscription_id, result, gathered, count, hold)
                count = len(extras)  # the cut by shard may need fewer slices than the first cut
        except SpillError as exc:  # its ERROR row, its state untouched; the other subscriptions go on
            gathered, count = self.listing.not_audited(subscription_id, result, hold, where, exc), 1
        if count == 1:  # it stayed in memory: planned whole, held by the listing's hold
            part = gathered.whole()
            survey = self._survey(subscription_id, gathered, part)
            extras = self.listing.decide(subscription_id, result, gathered, survey, 1)
            part.take_extras(extras[0], hold.take)
            plan = self._plan(subscription_id, result, audited_at, part, gathered.deleted, hold)
            self._queue(subscription_id, result, hold, plan)
            return
        for index in range(count):
            self._plan_slice(subscription_id, result, audited_at, gathered, size, extras[index], index, count)

    def _first_pass(
        self, subscription_id: str, result: SubscriptionResult, gathered: Gathered, count: int, hold: Hold
    ) -> tuple[int, list[Extras]]:
        """A pass over a cut subscription's slices: its layout size, each slice's extras; then the cut by shard."""
        hold.give_back(hold.count)  # everything is on disk now
        survey = Survey()
        for index in range(count):
            # No name holds the slice: it is gone when given back (a local kept it, uncounted).
            self._survey(subscription_id, gathered, gathered.load(index, take=hold.take), survey)
            hold.give_back(hold.count)
        extras = self.listing.decide(subscription_id, result, gathered, survey, count)
        size = survey.size + sum(isinstance(extra, SiteRecord) for each in extras for _, extra in each)
        extras = gathered.align(size, extras, lambda listed: set_owners(listed, self.settings.owner_tags), hold)
        hold.release()
        return size, extras

    def _plan_slice(
        self,
        subscription_id: str,
        result: SubscriptionResult,
        audited_at: datetime,
        gathered: Gathered,
        size: int,
        extras: Extras,
        index: int,
        count: int,
    ) -> None:
        """One slice of a subscription cut into ``count``: read back, each record held as it is read
        (waiting at the cap), planned with the whole subscription's flags and layout, and queued
        under an owner of its own."""
        hold = self.budget.admit(subscription_id)
        try:
            part = gathered.load(index, last=True, take=hold.take)
            if self.run.summary.resumed:
                part.kept = earlier_attempt(self.store, self.run, part, replayed=gathered.records, delete=False)
            part.take_extras(extras, hold.take)
            plan = self._plan(subscription_id, result, audited_at, part, gathered.deleted, hold, layout_size=size)
        except BaseException:
            hold.release()
            raise
        owner = f"{subscription_id} (slice {index + 1} of {count})"
        self._queue(owner, result, hold, plan, flush_own=gathered.aligned or index == count - 1)

    def _survey(self, subscription_id: str, gathered: Gathered, part: Slice, survey: Survey | None = None) -> Survey:
        """A slice's part of the whole subscription's decisions; on a resume, the earlier attempt's
        rows it does not keep are deleted here (once), and its kept decisions replayed."""
        survey = Survey() if survey is None else survey
        if self.run.summary.resumed:
            part.kept = earlier_attempt(self.store, self.run, part, replayed=gathered.records)
        survey.add(part)
        return survey

    def _plan(
        self,
        subscription_id: str,
        result: SubscriptionResult,
        audited_at: datetime,
        part: Slice,
        deleted: set[str],
        hold: Hold,
        layout_size: int | None = None,
    ) -> SubscriptionPlan:
        set_owners(part.listed, self.settings.owner_tags)  # a slice holds each site with its slots
        findings = Findings(part.listed, self.run.exemptions, audited_at)
        reread: set[str] = set()
        if result.read and not self.run.targeted:
            reread = reread_fresher(self.inventory, self.run, subscription_id, part.listed, findings, part.prior, hold)
        return plan_subscription(
            subscription_id,
            findings,
            part.prior,
            part.extra,
            summary=self.run.summary,
            audited_at=audited_at,
            read=result.read,
            partial=result.partial or self.run.targeted,  # a targeted read retires only what is confirmed
            subscription_name=self.run.names.get(fold(subscription_id), ""),
            request_tag=self.settings.exemption_request_tag,
            retire=deleted,
            in_place=self.run.targeted,
            kept=part.kept,
            source=SOURCE_GET if self.run.targeted else getattr(self.inventory, "source", SOURCE_LIST),
            reread=frozenset(reread),
            layout_size=layout_size,
        )

    def _queue(
        self, owner: str, result: SubscriptionResult, hold: Hold, plan: SubscriptionPlan, *, flush_own: bool = True
    ) -> None:
        """Queue a planned subscription (or slice)'s result rows; its state follows if it was read."""
        hold.listed()
        result.counts.update(plan.counts)
        result.rows += len(plan.findings)
        tracked = _Tracked(plan, hold, owner=owner, flush_own=flush_own)
        self.steps.rows(owner, plan.result_rows(), tracked, advance=result.read)
        if result.read:  # unreadable: its last-known state stays exactly as it was
            result.new_failures += plan.new_failures
            result.retired += len(plan.gone)

    def scope_error(self, owner: str, error: InventoryError) -> SubscriptionResult:
        """The ERROR row of a scope above the subscriptions (the tenant: nothing could be read), written
        with the run's rows; it has no state. Its result counts its row, not a subscription."""
        result = SubscriptionResult(owner, read=False, partial=True)
        plan = plan_subscription(
            error.subscription_id,
            {TENANT_ROW_KEY: error_finding(error)},
            {},
            [],
            summary=self.run.summary,
            audited_at=self.now(),
            read=False,
            partial=True,
        )
        result.counts, result.rows = plan.counts, len(plan.findings)
        log.error("Run %s: %s %s", self.run.summary.run_id, error.scope_id, error.message)
        self.steps.rows(owner, plan.result_rows(), _Tracked(plan), advance=False)
        return result

    def _targeted_state(
        self, subscription_id: str, listed: Listed, deleted: set[str], gone_ids: list[str]
    ) -> tuple[dict[str, Any], list[StateCopy], set[str]]:
        """A change run's read of the state of what it re-read (under any key an older version used),
        whole rows (few). Resources whose state an unfinished nightly run advanced are left to its
        resume (:attr:`deferred`: the next poll reads their change again): the resumed run's rows
        must still agree with the alerts that name it. A slot read alone takes the owner the last
        run stored for it (its site was not read)."""
        ids = [f.resource_id for f in listed.values()] + gone_ids
        keys = {key for rid in ids for key in lookup_keys(rid)} | set(listed) | deleted
        narrowed = narrowed_state_filters(subscription_id, keys, (f"{k}|slots|" for k in deleted))
        prior, extra = self.store.subscription_state(subscription_id, (), narrowed)
        unfinished = self.run.unfinished_nightly
        for key, state in list(prior.items()):
            item = listed.get(key)
            if item is None:
                continue
            if unfinished and state.get("LastRunId") == unfinished:
                with self._lock:
                    self.deferred.add(fold(item.resource_id))
                del listed[key]
            elif item.slot and not item.owner and state.get("Owner"):
                listed[key] = replace(item, owner=str(state["Owner"]))
        return targeted(prior, extra, listed, deleted)

    # -- the end of the run: the steps' ----------------------------------------------------------
    def check(self) -> None:
        self.steps.check()

    def drain(self) -> None:
        self.steps.drain()

    def close(self) -> None:
        self.steps.close()

    @property
    def transactions(self) -> int:
        return self.steps.transactions

    @property
    def partitions(self) -> int:
        return self.steps.partitions


def audit_all(pipeline: SubscriptionPipeline, subscription_ids: Iterable[str]) -> Totals:
    """Audit subscriptions on ``AUDIT_CONCURRENCY`` threads, the next one started as one ends; a
    failed step of any subscription stops the run.

    Not all submitted at once: each queued subscription would hold its task, and each finished one
    its future and result, until the run ended, allocated one by one over the run's length (memory
    that grows with the tenant's subscriptions, not bounded by a setting). Only the running
    subscriptions are in flight, and each result is added to the totals as it comes."""
    totals = Totals()
    source = iter(subscription_ids)
    pending: set[Future[SubscriptionResult]] = set()

    def submit_next() -> None:
        for subscription_id in source:
            pending.add(pool.submit(pipeline.audit, subscription_id))
            return

    with executor(pipeline.settings.concurrency, "audit", pipeline.thread_init) as pool:
        try:
            for _ in range(pipeline.settings.concurrency):
                submit_next()
            while pending:
                done, _ = wait(pending, timeout=1, return_when=FIRST_COMPLETED)
                for future in done:
                    pending.discard(future)
                    totals.add(future.result())
                    submit_next()
                pipeline.check()
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    return totals
