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
from dataclasses import replace
from datetime import datetime
from typing import Any, Protocol

from ..azure.store import TableStore
from ..azure.threads import NO_CONTEXT, ThreadInit
from ..core.config import Settings
from ..core.errors import one_line
from ..core.evaluate import error_finding
from ..core.keys import lookup_keys, resource_key
from ..core.layout import narrowed_state_filters
from ..core.models import Finding, GoneRecord, InventoryError, SiteRecord, Status
from ..core.names import fold, same
from ..core.plan import (
    Findings,
    Listed,
    SubscriptionPlan,
    SubscriptionResult,
    plan_subscription,
    targeted,
)
from ..core.schema import SOURCE_GET, SOURCE_LIST, StateCopy, finding_from_row
from ..core.when import as_utc
from .budget import Hold
from .steps import ATTEMPT_PARTITIONS as ATTEMPT_PARTITIONS
from .steps import Checkpoint as Checkpoint
from .steps import RunContext as RunContext
from .steps import Steps, _Tracked

log = logging.getLogger(__name__)

#: Resources the run holds in memory at once (listed, their state not stored yet: compact records of
#: subscriptions being listed, planned, or waiting for their shared partitions to fill), a hard cap:
#: past it, a subscription being listed waits (``budget.py``; the one that started holding first
#: never does, so the run holds at most this plus its largest subscription). About 1 KB each.
MAX_HELD_RESOURCES = 20_000
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
        self.steps = Steps(
            settings, store, run, checkpoint=checkpoint, thread_init=thread_init, held=MAX_HELD_RESOURCES
        )
        self.budget = self.steps.budget
        self._lock = threading.Lock()
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
            self.steps.rows(subscription_id, plan.result_rows(), tracked, advance=False)
            return result
        self.steps.rows(subscription_id, plan.result_rows(), tracked, advance=True)
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
                kept = earlier_attempt(self.store, self.run, subscription_id, prior, listed)
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
            reread = reread_fresher(self.inventory, self.run, subscription_id, listed, findings, prior, hold)
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
        # a record is never an ERROR; a resumed run's replayed decision is one only where a record was listed
        if any(isinstance(item, SiteRecord) or item.status is not Status.ERROR for item in listed.values()):
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
            yield InventoryError(scope, subscription_id, vanished_message(self.settings, subscription_id, vanished))
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


def reread_fresher(
    inventory: Inventory,
    run: RunContext,
    subscription_id: str,
    listed: Listed,
    findings: Findings,
    prior: Mapping[str, Any],
    hold: Hold,
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
    for item in inventory.reread(subscription_id, disagree) if disagree else ():
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
            run.summary.run_id,
            len(disagree),
            subscription_id,
        )
    return fresh


def earlier_attempt(
    store: TableStore, run: RunContext, subscription_id: str, prior: Mapping[str, Any], findings: Listed
) -> dict[str, Any]:
    """A resumed run keeps the rows its earlier attempt stored for the resources whose state that
    attempt advanced (their decisions stand: an alert may already name this run, sent by it or
    owed) and deletes the others, which it writes again; returns the kept rows by key. Those
    decisions stand as that attempt saw each resource: they are replayed from the kept rows into
    ``findings`` (what the run reads now of those resources is not used). A kept resource that
    is no longer listed keeps its row only if an alert names this run for it."""
    run_id = run.summary.run_id
    earlier = store.run_rows(run_id, subscription_id)
    committed = {
        key
        for key, state in prior.items()
        if state.get("LastRunId") == run_id and (key in findings or state.get("AlertRunId") == run_id)
    }
    kept = {str(row["RowKey"]): row for row in earlier if str(row["RowKey"]) in committed}
    stale = [(str(row["PartitionKey"]), str(row["RowKey"])) for row in earlier if str(row["RowKey"]) not in kept]
    if stale:
        store.delete_keys(store.results, stale)
    if any(isinstance(item, SiteRecord) for item in findings.values()):  # else: silence, checked as such
        findings.update((key, finding_from_row(row)) for key, row in kept.items())
    return kept


def vanished_message(settings: Settings, subscription_id: str, row: Mapping[str, Any]) -> str:
    last = as_utc(row.get("LastAuditedAt"))
    return (
        "no longer visible to the auditor: the subscription list does not show it (disabled, moved out "
        "of the management group, or access removed); last audited "
        f"{last.isoformat() if last else 'before'} in run {row.get('LastRunId', '')}. Its last-known "
        "state is kept. It is reported until it is visible again, it was last audited over "
        f"AUDIT_RETENTION_DAYS ({settings.retention_days}) ago, or it is retired with "
        f"'clientcert-audit subscriptions retire {subscription_id}'."
    )
