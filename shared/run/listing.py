"""One subscription's inventory as the pipeline takes it: listed into memory and, past a slice, to
disk (:class:`~.slices.Gathered`); and the questions that concern the whole subscription, asked of
the inventory once: is a silent listing really empty, are the resources it no longer shows gone.

A gap is always visible: an unexpected failure, the run's deadline or a subscription that vanished
from the list becomes an ERROR row of the subscription, never a subscription left out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from ..azure.store import TableStore
from ..core.config import Settings
from ..core.errors import one_line
from ..core.evaluate import error_finding
from ..core.keys import resource_key
from ..core.models import Finding, GoneRecord, InventoryError, SiteRecord, Status
from ..core.names import same
from ..core.plan import Findings, Listed, SubscriptionResult
from ..core.schema import SOURCE_GET
from ..core.when import as_utc
from .budget import Hold
from .slices import Extras, Gathered, Survey
from .spill import SpillDir, slice_of
from .steps import RunContext

log = logging.getLogger("shared.pipeline")


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


class Listing:
    """Lists one subscription at a time for the pipeline, and asks the inventory what concerns it whole."""

    def __init__(
        self,
        settings: Settings,
        store: TableStore,
        inventory: Inventory,
        run: RunContext,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.store = store
        self.inventory = inventory
        self.run = run
        self.monotonic = monotonic

    def gather(
        self, subscription_id: str, result: SubscriptionResult, hold: Hold, where: SpillDir, limit: int
    ) -> Gathered:
        """The subscription's listing, state rows and (on a resume) earlier rows, each on disk past a
        slice: what the listing holds in memory is given back to the budget when it goes to disk."""
        gathered = Gathered(where, limit)
        for item in self.scan(subscription_id):
            self.take(item, subscription_id, result, gathered.rest, gathered.deleted, gathered.gone_ids, hold)
            gathered.records = gathered.records or isinstance(item, SiteRecord)
            if len(gathered.rest) >= limit:
                hold.give_back(gathered.spill_listed())
        # Read even when the subscription was not fully read (a Table read, not ARM): its rows then show
        # the stored state as it stays (nothing new, streaks kept), never a change the state does not hold.
        resumed = self.run.summary.resumed
        earlier = self.store.run_rows(self.run.summary.run_id, subscription_id) if resumed else ()
        gathered.read_state(self.store.state_pairs(subscription_id), earlier, hold)
        return gathered

    def not_audited(
        self, subscription_id: str, result: SubscriptionResult, hold: Hold, where: SpillDir, problem: Exception
    ) -> Gathered:
        """A subscription whose listing or state could not go to disk (``SpillError``): only its ERROR
        row, as an unreadable one's, and its state stays as it is (nothing is read, written or retired)."""
        hold.give_back(hold.count)
        gathered = Gathered(where, 1)
        error = InventoryError(f"/subscriptions/{subscription_id}", subscription_id, f"not audited: {problem}")
        self.take(error, subscription_id, result, gathered.rest, gathered.deleted, gathered.gone_ids, hold)
        return gathered

    def decide(
        self, subscription_id: str, result: SubscriptionResult, gathered: Gathered, survey: Survey, count: int
    ) -> list[Extras]:
        """What concerns the whole subscription, asked of the inventory once: a silent listing is
        confirmed before anything is retired, and resources the state holds that no slice listed are
        confirmed before they are retired. Returns what each slice gets from those answers."""
        extras: list[Extras] = [[] for _ in range(count)]
        silent = self.unconfirmed_silence(subscription_id, gathered.records, survey.live) if result.read else None
        if silent is not None:  # nothing listed, yet resources were known: nothing is retired
            self.warn(silent)
            key = resource_key(silent.scope_id)
            extras[slice_of(key, count)].append((key, error_finding(silent)))
            result.read, result.partial = False, True
        elif result.read and survey.missing:  # some were not listed: confirmed before they are retired
            for item in self.inventory.confirm_missing(subscription_id, survey.missing):
                found: Listed = {}
                self.take(item, subscription_id, result, found, gathered.deleted, gathered.gone_ids, None)
                for key, value in found.items():
                    extras[slice_of(key, count)].append((key, value))
        return extras

    def take(
        self,
        item: SiteRecord | InventoryError | GoneRecord,
        subscription_id: str,
        result: SubscriptionResult,
        listed: Listed,
        deleted: set[str],
        gone_ids: list[str],
        hold: Hold | None,
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
            self.warn(item)
        else:
            value = item
        key = resource_key(value.resource_id)
        if key not in listed:
            if hold is not None:  # else: taken where it is added (``Slice.take_extras``)
                hold.take()
            listed[key] = value

    def warn(self, error: InventoryError) -> None:
        log.warning("Run %s: cannot read %s: %s", self.run.summary.run_id, error.scope_id, error.message)

    def unconfirmed_silence(self, subscription_id: str, records: bool, live: bool) -> InventoryError | None:
        """A subscription that listed nothing tonight (``records``: it listed a record) while its state
        holds live resources (``live``) is asked once more (the inventory decides how) before those
        resources are retired as gone. A resumed run's replayed decisions exist only where a record
        was listed, so the listing alone decides."""
        if self.run.targeted or records or not live:
            return None
        return self.inventory.confirm_empty(subscription_id)

    def scan(self, subscription_id: str) -> Iterable[SiteRecord | InventoryError | GoneRecord]:
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
