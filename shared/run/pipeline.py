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
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from azure.core.exceptions import AzureError

from ..azure.exemptions import Exemption
from ..azure.store import TableStore
from ..azure.threads import NO_CONTEXT, ThreadInit, executor
from ..core import events
from ..core.config import Settings
from ..core.errors import AuditFailed, one_line
from ..core.evaluate import error_finding
from ..core.keys import lookup_keys, resource_key
from ..core.layout import narrowed_state_filters, partition_batches, results_partition, state_shards
from ..core.models import Finding, GoneRecord, InventoryError, SiteRecord, Status
from ..core.names import fold, same
from ..core.plan import (
    Findings,
    Listed,
    SubscriptionPlan,
    SubscriptionResult,
    new_failure_event,
    plan_subscription,
    targeted,
)
from ..core.schema import ETAG, SOURCE_GET, SOURCE_LIST, StateCopy
from ..core.summary import RunSummary
from ..core.when import as_utc
from .budget import HeldBudget, Hold
from .writer import PackedWriter

log = logging.getLogger(__name__)

#: Resources the run holds in memory at once (listed, their state not stored yet: compact records of
#: subscriptions being listed, planned, or waiting for their shared partitions to fill), a hard cap:
#: past it, a subscription being listed waits (``budget.py``; the one that started holding first
#: never does, so the run holds at most this plus its largest subscription). About 1 KB each.
MAX_HELD_RESOURCES = 20_000
Checkpoint = Callable[[str, str], None]
#: Results partitions each attempt of a run numbers its own (10,000 × 1,000 rows): a resumed attempt
#: writes beside the rows it keeps from the earlier one, never into its partitions.
ATTEMPT_PARTITIONS = 10_000
#: RowKey of the tenant's ERROR row (its ResourceId is ``/``, the tenant root scope).
TENANT_ROW_KEY = "~tenant"


class Inventory(Protocol):
    """What the engine needs from an inventory source (ARM or Resource Graph)."""

    def subscriptions(self) -> list[Any]: ...

    def confirm_empty(self, subscription_id: str) -> InventoryError | None: ...

    def confirm_missing(
        self, subscription_id: str, resource_ids: Sequence[str]
    ) -> Iterable[SiteRecord | InventoryError | GoneRecord]: ...

    def reread(
        self, subscription_id: str, resource_ids: Sequence[str]
    ) -> Iterable[SiteRecord | InventoryError | GoneRecord]: ...

    def scan(self, subscription_id: str) -> Iterable[SiteRecord | InventoryError | GoneRecord]: ...

    def close(self) -> None: ...


# -- the pipeline (I/O) ----------------------------------------------------------------------------
@dataclass
class _Tracked:
    """A subscription between its listing and its last step, with what it holds in memory."""

    plan: SubscriptionPlan
    hold: Hold | None = None  # None: a scope's ERROR row, held by no subscription


@dataclass(frozen=True)
class RunContext:
    """What every subscription of one run shares (read-only)."""

    summary: RunSummary
    exemptions: Sequence[Exemption]
    names: Mapping[str, str]  # lower-cased subscription id -> display name
    vanished: Mapping[str, Mapping[str, Any]]  # subscription id -> its registry row
    deadline: float  # the host's monotonic time after which no ARM call starts
    #: A change poll reads only some resources of each subscription: nothing else is retired or
    #: confirmed, and only those resources' state is touched.
    targeted: bool = False
    #: The nightly run that died and may be resumed (a change run leaves its state rows alone).
    unfinished_nightly: str = ""


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
        self.monotonic = monotonic
        self.checkpoint = checkpoint
        run_id = run.summary.run_id
        first = (run.summary.attempt - 1) * ATTEMPT_PARTITIONS  # a resumed attempt's rows beside the kept ones
        self._results = PackedWriter(
            lambda rows: store.write_batch(store.results, rows),
            sequential=lambda index: results_partition(run_id, first + index),
            name="results",
        )
        self._state = PackedWriter(self._write_state, name="state")
        #: The ETag each owed alert's state row got when it was stored: its mark is written only
        #: while the row is still that one (the fence that holds with the write, see store.write_state).
        self._owed_etags: dict[tuple[str, str], str] = {}
        self._steps = executor(max(2, settings.concurrency), "steps", thread_init)
        self._lock = threading.Lock()
        self._futures: list[Future[None]] = []
        self._errors: list[tuple[str, BaseException]] = []  # failed steps, by subscription
        self.budget = HeldBudget(MAX_HELD_RESOURCES, stalled=self._send_partial_batches, failed=self._failure)
        self.extra_transactions = 0
        #: Folded ids of changed resources a change run left to an unfinished nightly run's resume.
        self.deferred: set[str] = set()

    # -- one subscription -----------------------------------------------------------------------
    def audit(self, subscription_id: str) -> SubscriptionResult:
        """Inventory one subscription (compact records, within the run's memory cap), compare it with
        its prior state, plan it, and queue its result rows; its state and alerts follow as their own
        tasks when the writers report the previous step durable."""
        result = SubscriptionResult(subscription_id)
        audited_at = self.now()
        hold = self.budget.admit(subscription_id)
        try:
            plan = self._plan(subscription_id, result, audited_at, hold)
        except BaseException:
            hold.release()
            raise
        hold.listed()
        result.counts, result.rows = plan.counts, len(plan.findings)
        tracked = _Tracked(plan, hold)
        if not result.read:  # unreadable: its last-known state stays exactly as it was
            self._results.add(
                subscription_id, plan.result_rows(), self._then(subscription_id, self._rows_only, tracked)
            )
            return result
        self._results.add(
            subscription_id, plan.result_rows(), self._then(subscription_id, self._advance_state, tracked)
        )
        result.new_failures, result.retired = plan.new_failures, len(plan.gone)
        return result

    def _plan(
        self, subscription_id: str, result: SubscriptionResult, audited_at: datetime, hold: Hold
    ) -> SubscriptionPlan:
        deleted: set[str] = set()
        gone_ids: list[str] = []
        listed: Listed = {}
        for item in self._scan(subscription_id):
            self._take(item, subscription_id, result, listed, deleted, gone_ids, hold)
        findings = Findings(listed, self.run.exemptions, audited_at)
        # Read even when the subscription was not fully read (a Table read, not ARM): its rows then show
        # the stored state as it stays (nothing new, streaks kept), never a change the state does not hold.
        kept: dict[str, Any] = {}
        reread: set[str] = set()
        if self.run.targeted:  # only the state of what was re-read
            prior, extra, deleted = self._targeted_state(subscription_id, listed, deleted, gone_ids)
        else:
            prior, extra = self.store.subscription_state(subscription_id, listed)
            if self.run.summary.resumed:
                kept = self._earlier_attempt(subscription_id, prior, listed)
        # Rows of resources not listed tonight are kept whole (to be retired): held like records.
        hold.take(sum(1 for key, state in prior.items() if key not in listed and not state.get("Gone")))
        silent = self._unconfirmed_silence(subscription_id, listed, prior) if result.read else None
        if silent is not None:  # nothing listed, yet resources were known: nothing is retired
            self._warn(silent)
            hold.take()
            listed[resource_key(silent.scope_id)] = error_finding(silent)
            result.read, result.partial = False, True
        elif result.read and not self.run.targeted:  # some were not listed: confirmed before they are retired
            missing = [str(s.get("ResourceId") or k) for k, s in prior.items() if k not in listed and not s.get("Gone")]
            for item in self.inventory.confirm_missing(subscription_id, missing) if missing else ():
                self._take(item, subscription_id, result, listed, deleted, gone_ids, hold)
            reread = self._reread_fresher(subscription_id, listed, findings, prior, hold)
        return plan_subscription(
            subscription_id,
            findings,
            prior,
            extra,
            summary=self.run.summary,
            audited_at=audited_at,
            read=result.read,
            partial=result.partial or self.run.targeted,  # a targeted read retires only what is confirmed
            subscription_name=self.run.names.get(fold(subscription_id), ""),
            request_tag=self.settings.exemption_request_tag,
            retire=deleted,
            in_place=self.run.targeted,
            kept=kept,
            source=SOURCE_GET if self.run.targeted else getattr(self.inventory, "source", SOURCE_LIST),
            reread=frozenset(reread),
        )

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
        self._results.add(owner, plan.result_rows(), self._then(owner, self._rows_only, _Tracked(plan)))
        return result

    def _reread_fresher(
        self, subscription_id: str, listed: Listed, findings: Findings, prior: Mapping[str, Any], hold: Hold
    ) -> set[str]:
        """A listing that may lag (Resource Graph's index) must not override a fresher read: where it
        disagrees with a state a GET stored (a change poll's), the resource is read again by GET and
        audited from that answer. Returns the keys so read; ARM's own lists are fresh (nothing asked)."""
        disagree = [
            finding.resource_id
            for key, finding in findings.items()
            if finding.status is not Status.ERROR
            and prior.get(key, {}).get("ObservedBy") == SOURCE_GET
            and prior[key].get("Status") != finding.status.value
            and not prior[key].get("Gone")
        ]
        fresh: set[str] = set()
        for item in self.inventory.reread(subscription_id, disagree) if disagree else ():
            key = resource_key(item.resource_id if not isinstance(item, InventoryError) else item.scope_id)
            if isinstance(item, SiteRecord):
                if key not in listed:
                    hold.take()
                listed[key] = item  # audited from this answer (its finding is computed from it)
                fresh.add(key)
            elif isinstance(item, GoneRecord):
                listed.pop(key, None)  # listed by a stale index, deleted meanwhile: retired below
            else:  # ARM could not answer: the listing stands
                log.info("Could not read %s again to check Resource Graph's answer: %s", item.scope_id, item.message)
        if disagree:
            log.info(
                "Run %s: %d resources of %s read again: Resource Graph disagreed with a fresher read",
                self.run.summary.run_id,
                len(disagree),
                subscription_id,
            )
        return fresh

    def _earlier_attempt(self, subscription_id: str, prior: Mapping[str, Any], findings: Listed) -> dict[str, Any]:
        """A resumed run keeps the rows its earlier attempt stored for the resources whose state that
        attempt advanced (their decisions stand: an alert may already name this run, sent by it or
        owed) and deletes the others, which it writes again; returns the kept rows by key. A kept
        resource that is no longer listed keeps its row only if an alert names this run for it."""
        run_id = self.run.summary.run_id
        earlier = self.store.run_rows(run_id, subscription_id)
        committed = {
            key
            for key, state in prior.items()
            if state.get("LastRunId") == run_id and (key in findings or state.get("AlertRunId") == run_id)
        }
        kept = {str(row["RowKey"]): row for row in earlier if str(row["RowKey"]) in committed}
        stale = [(str(row["PartitionKey"]), str(row["RowKey"])) for row in earlier if str(row["RowKey"]) not in kept]
        if stale:
            self.store.delete_keys(self.store.results, stale)
        return kept

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

    def _take(
        self,
        item: SiteRecord | InventoryError | GoneRecord,
        subscription_id: str,
        result: SubscriptionResult,
        listed: Listed,
        deleted: set[str],
        gone_ids: list[str],
        hold: Hold,
    ) -> None:
        """One item an inventory found: its compact record (first sighting wins), taken from the run's
        memory budget as it comes (waiting at the cap), an ERROR finding, or a confirmed deletion. A
        record's finding is computed when its rows are rendered (:class:`~shared.core.plan.Findings`)."""
        if isinstance(item, GoneRecord):
            deleted.add(resource_key(item.resource_id))
            gone_ids.append(item.resource_id)
            return
        value: SiteRecord | Finding
        if isinstance(item, InventoryError):
            value = error_finding(item)
            result.partial = True
            if same(item.scope_id, f"/subscriptions/{subscription_id}"):
                result.read = False
            self._warn(item)
        else:
            value = item
        key = resource_key(value.resource_id)
        if key not in listed:
            hold.take()
            listed[key] = value

    def _warn(self, error: InventoryError) -> None:
        log.warning("Run %s: cannot read %s: %s", self.run.summary.run_id, error.scope_id, error.message)

    def _unconfirmed_silence(
        self, subscription_id: str, listed: Listed, prior: Mapping[str, Any]
    ) -> InventoryError | None:
        """A subscription that listed nothing tonight while its state holds live resources is asked
        once more (the inventory decides how) before those resources are retired as gone."""
        if self.run.targeted:
            return None
        if any(isinstance(item, SiteRecord) for item in listed.values()):  # a record is never an ERROR
            return None
        if not any(not state.get("Gone") for state in prior.values()):
            return None
        return self.inventory.confirm_empty(subscription_id)

    def _scan(self, subscription_id: str) -> Iterable[SiteRecord | InventoryError | GoneRecord]:
        """The inventory of one subscription; an unexpected failure, the run's deadline or a
        subscription that vanished from the list becomes an ERROR row for it: a gap is visible."""
        scope = f"/subscriptions/{subscription_id}"
        vanished = self.run.vanished.get(subscription_id)
        if vanished is not None:
            yield InventoryError(scope, subscription_id, self._vanished_message(subscription_id, vanished))
            return
        note = f"the run reached its deadline (AUDIT_RUN_DEADLINE_MINUTES={self.settings.run_deadline_minutes})"
        if self.monotonic() > self.run.deadline:
            yield InventoryError(scope, subscription_id, f"not audited: {note}")
            return
        try:
            for item in self.inventory.scan(subscription_id):
                yield item
                if self.monotonic() > self.run.deadline:
                    yield InventoryError(scope, subscription_id, f"listing incomplete: {note}")
                    return
        except Exception as exc:  # noqa: BLE001 - one broken subscription never stops the run
            yield InventoryError(scope, subscription_id, one_line(exc))

    def _vanished_message(self, subscription_id: str, row: Mapping[str, Any]) -> str:
        last = as_utc(row.get("LastAuditedAt"))
        return (
            "no longer visible to the auditor: the subscription list does not show it (disabled, moved out "
            "of the management group, or access removed); last audited "
            f"{last.isoformat() if last else 'before'} in run {row.get('LastRunId', '')}. Its last-known "
            "state is kept. It is reported until it is visible again, it was last audited over "
            f"AUDIT_RETENTION_DAYS ({self.settings.retention_days}) ago, or it is retired with "
            f"'clientcert-audit subscriptions retire {subscription_id}'."
        )

    # -- continuations ----------------------------------------------------------------------------
    def _then(self, subscription_id: str, step: Callable[[Any], None], arg: Any) -> Callable[[], None]:
        """The writer's durability signal: submit the subscription's next step as its own task."""

        def submit() -> None:
            with self._lock:
                if self._errors:  # the run is failing: no further step starts (a resumed run does it)
                    return
                if len(self._futures) >= 256:  # steps that ran are let go (their errors are in _errors)
                    self._futures = [f for f in self._futures if not f.done()]
                self._futures.append(self._steps.submit(self._run_step, subscription_id, step, arg))

        return submit

    def _run_step(self, subscription_id: str, step: Callable[[Any], None], arg: Any) -> None:
        try:
            step(arg)
        except BaseException as exc:
            with self._lock:
                self._errors.append((subscription_id, exc))
            raise

    def _rows_only(self, tracked: _Tracked) -> None:
        self.checkpoint("rows_written", tracked.plan.subscription_id)
        self._let_go(tracked)

    def _advance_state(self, tracked: _Tracked) -> None:
        """The subscription's result rows are stored: advance its last-known state."""
        plan = tracked.plan
        self.checkpoint("rows_written", plan.subscription_id)
        own = state_shards(len(plan.changes)) > 0
        done = self._then(plan.subscription_id, self._alert, tracked)
        self._state.add(plan.subscription_id, plan.state_rows(), done, flush_own=own)

    def _alert(self, tracked: _Tracked) -> None:
        """The subscription's state is stored: send its owed alerts, then tidy moved rows.

        Each batch of owed rows is marked sent (``AlertPending`` cleared) *before* its events are
        logged: a store failure leaves them owed and unsent (any later run that still sees them
        failing sends them), and a mark that was stored means its events follow at once, so none
        is sent twice.
        """
        plan = tracked.plan
        self.checkpoint("state_advanced", plan.subscription_id)
        for key in plan.alerts_dropped():
            finding = plan.findings[key]
            log.info(
                "Run %s: dropped the owed NewFailure alert of %s: it no longer fails (now %s)",
                plan.run_id,
                finding.resource_id,
                finding.status.value,
            )
        for batch in partition_batches(plan.alerts_due(), plan.partitions.__getitem__):
            with self._lock:
                etags = [self._owed_etags.pop((plan.partitions[key], key), None) for key in batch]
            marks = [{**plan.state_row(key, alerted=True), ETAG: etag} for key, etag in zip(batch, etags, strict=True)]
            sent, _ = self.store.write_state(marks)
            with self._lock:
                self.extra_transactions += sent
                self.run.summary.alerts_sent += len(batch)
            for key in batch:
                change = plan.changes[key]
                events.emit_new_failure(
                    new_failure_event(change.alert_run_id, plan.findings[key], change, sent_by=plan.run_id)
                )
            self.checkpoint("alerted", plan.subscription_id)
        if plan.gone:
            log.info("Run %s: %d resources of %s are gone", plan.run_id, len(plan.gone), plan.subscription_id)
        self._tidy(plan)
        self._let_go(tracked)

    def _tidy(self, plan: SubscriptionPlan) -> None:
        stale = plan.stale_copies()
        if not stale:
            return
        try:
            deleted, sent = self.store.delete_state_copies(stale)
        except AzureError as exc:  # the copies are harmless (the newer one wins); retried next run
            log.warning("Could not delete %d old state rows of %s: %s", len(stale), plan.subscription_id, one_line(exc))
            return
        with self._lock:
            self.extra_transactions += sent
        log.info("Run %s: moved %d state rows of %s to tonight's layout", plan.run_id, deleted, plan.subscription_id)

    def _write_state(self, rows: list[dict[str, Any]]) -> int:
        """The state writer's transaction: conditional on each row's ETag; remembers the new ETag
        of every row whose alert is owed, for its mark."""
        sent, etags = self.store.write_state(rows)
        owed = {(str(r["PartitionKey"]), str(r["RowKey"])) for r in rows if r.get("AlertPending")}
        if owed:
            with self._lock:
                self._owed_etags.update((at, etags[at]) for at in owed)
        return sent

    # -- memory ---------------------------------------------------------------------------------
    def _let_go(self, tracked: _Tracked) -> None:
        if tracked.hold is not None:
            tracked.hold.release()

    def _send_partial_batches(self) -> None:
        """Every listing waits at the memory cap: send the partial batches and wait for the steps
        they start, twice (rows, then state), so that the subscriptions waiting for their shared
        partitions complete (rows, state, alerts) and let go of what they hold."""
        log.info(
            "Sending partial batches early: %d resources held (cap %d), every listing waits",
            self.budget.held,
            self.budget.cap,
        )
        for writer in (self._results, self._state):
            writer.flush()
            self._wait_steps()

    def _failure(self) -> BaseException | None:
        """The first failed step or write, if any (what it holds may never be released)."""
        with self._lock:
            if self._errors:
                return self._errors[0][1]
        return self._results.error or self._state.error

    # -- the end of the run -----------------------------------------------------------------------
    def check(self) -> None:
        """Raise the first failed step's error, named after its subscription."""
        with self._lock:
            failed = self._errors[0] if self._errors else None
        if failed is not None:
            subscription_id, exc = failed
            raise AuditFailed(f"subscription {subscription_id}: {one_line(exc)}") from exc

    def drain(self) -> None:
        """Send the last partial batches and wait until every continuation has run (a step may
        queue rows that need another flush, whose signal submits another step)."""
        while True:
            self._results.flush()
            waited = self._wait_steps()
            self._state.flush()
            waited = self._wait_steps() or waited
            self.check()
            if not waited and not self._results.buffered and not self._state.buffered:
                break
        unfinished = self._results.waiting_owners + self._state.waiting_owners
        if unfinished:
            raise AuditFailed(f"{unfinished} subscriptions' rows or state could not be stored")
        log.info(
            "Run %s: at most %d resources held in memory at once (cap %d); listings waited %d times, "
            "%d partial flushes for them",
            self.run.summary.run_id,
            self.budget.peak,
            self.budget.cap,
            self.budget.waits,
            self.budget.stall_flushes,
        )

    def _wait_steps(self) -> bool:
        with self._lock:
            futures, self._futures = self._futures, []
        if futures:
            wait(futures)
        return bool(futures)

    def close(self) -> None:
        self._steps.shutdown(wait=True, cancel_futures=True)

    @property
    def transactions(self) -> int:
        return self._results.transactions + self._state.transactions + self.extra_transactions

    @property
    def partitions(self) -> int:
        return len(self._results.partitions) + len(self._state.partitions)
